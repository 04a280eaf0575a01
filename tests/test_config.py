"""Config parsing and validation: bad values fail with one line naming the key, before any
run directory exists."""

from __future__ import annotations


import h5py
import numpy as np
import pytest

from offrl import config as cfg
from offrl.cli import main_guard
from offrl.experiment import resolve

from offrl.cli import train as train_script


@pytest.mark.parametrize(
    "raw, value",
    [("3e-4", 3e-4), ("1e5", 1e5), ("-2.5E+3", -2500.0), (".5", 0.5), ("3", 3), ("1_000", 1000), ("abc", "abc")],
)
def test_numbers_parse_as_yaml_1_2(raw, value):
    parsed = cfg.parse_overrides(["--actor-lr", raw])["actor_lr"]
    assert parsed == value and type(parsed) is type(value)


def test_exponent_floats_reach_float_and_int_keys(tmp_path):
    config = resolve({"agent": "iql-ddpg", **cfg.parse_overrides(["--actor-lr", "3e-4", "--steps", "1e3"])})
    assert config["actor_lr"] == 3e-4 and config["steps"] == 1000 and isinstance(config["steps"], int)
    preset = tmp_path / "preset.yaml"
    preset.write_text("critic_lr: 1e-3\n")
    assert resolve({"agent": "iql-ddpg", "config": str(preset)})["critic_lr"] == 1e-3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-seeds", "0"], "config key 'num_seeds' must be an integer >= 1, got 0"),
        (["--steps", "-5"], "config key 'steps' must be an integer >= 1, got -5"),
        (["--steps", "0"], "config key 'steps' must be an integer >= 1, got 0"),
        (["--hidden_dims", "x"], "config key 'hidden_dims' must be a list of integers >= 1"),
        (["--hidden_dims", "256,0"], "config key 'hidden_dims' must be a list of integers >= 1"),
        (["--actor-lr", "0"], "config key 'actor_lr' must be a number > 0, got 0.0"),
        (["--critic-lr", "-3e-4"], "config key 'critic_lr' must be a number > 0"),
        (["--value-lr", ".nan"], "config key 'value_lr' must be a number > 0"),
        (["--batch-size", "0"], "config key 'batch_size' must be an integer >= 1"),
        (["--eval-interval", "0"], "config key 'eval_interval' must be an integer >= 1 or null"),
        (["--eval-interval", "often"], "config key 'eval_interval' must be an integer >= 1 or null"),
        (["--eval-episodes", "0"], "config key 'eval_episodes' must be an integer >= 1"),
        (["--updates-per-call", "0"], "config key 'updates_per_call' must be an integer >= 1"),
        (["--seed", "-1"], "config key 'seed' must be an integer >= 0"),
        (["--discount", "1.5"], "config key 'discount' must be a number in [0, 1]"),
        (["--expectile", "1"], "config key 'expectile' must be a number strictly between 0 and 1"),
        (["--eval-squash", "sigmoid"], "config key 'eval_squash' must be one of tanh, clip"),
        (["--d4rl-reward", "hopper"], "config key 'd4rl_reward' must be one of auto, none, locomotion, antmaze"),
        (["--wandb.mode", "sometimes"], "config key 'wandb.mode' must be one of"),
        (["--agent", "fb", "--z-dim", "0"], "config key 'z_dim' must be an integer >= 1"),
        (["--agent", "fb", "--target-heads", "max"], "config key 'target_heads' must be one of min, mean"),
        (["--agent", "reinforce", "--env", "CartPole-v1", "--episodes-per-update", "0"],
         "config key 'episodes_per_update' must be an integer >= 1"),
    ],
)
def test_bad_values_fail_before_any_run_directory(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run directory is runs/... under the working directory
    run_dir = tmp_path / "run"
    argv = argv + ["--run-dir", str(run_dir)] + ([] if "--wandb.mode" in argv else ["--wandb.mode", "disabled"])
    assert main_guard(lambda: train_script.main(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not run_dir.exists() and not (tmp_path / "runs").exists()


def test_hdf5_without_env_names_the_flag_and_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "my-robot.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file["observations"] = rng.normal(size=(20, 5)).astype(np.float32)
        file["actions"] = rng.uniform(-1, 1, (20, 2)).astype(np.float32)
        file["rewards"] = rng.normal(size=20).astype(np.float32)
        file["terminals"] = np.zeros(20, bool)
        file["timeouts"] = np.arange(20) % 10 == 9
    run_dir = tmp_path / "run"
    argv = ["--dataset", str(path), "--run-dir", str(run_dir), "--wandb.mode", "disabled"]
    assert main_guard(lambda: train_script.main(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert "has no known evaluation env; give one with --env ENV_ID" in err and "\n" not in err
    assert not run_dir.exists()


def test_default_command_trains_on_maze2d_umaze_with_the_preset():
    """`python scripts/train.py --agent iql-ddpg` with nothing else: the maze2d umaze data (reach and
    stay, where offline RL and behaviour cloning differ) with the maze2d preset's CPU budget, which
    the README's 15-minute claim is measured at."""
    from offrl.data import dataset_family

    config = resolve({"agent": "iql-ddpg"})
    preset = cfg.load_yaml(cfg.PRESET_DIR / "iql" / "maze2d.yaml")
    assert config["dataset"] == cfg.DEFAULT_DATASET and dataset_family(cfg.DEFAULT_DATASET) == "maze2d"
    assert config["steps"] == preset["steps"] == 20_000
    assert config["actor_lr_schedule"] == "constant" and config["normalize_observations"]
    assert resolve({"agent": "bc"})["steps"] == 20_000  # the bc row compares at the same budget


def test_valid_defaults_pass():
    from offrl.agents import agent_config_class

    for overrides in [*({"agent": agent} for agent in ("iql-awr", "iql-ddpg", "iql-dawr", "fb", "bc", "td3bc")),
                      {"agent": "reinforce", "env": "CartPole-v1"}, {"agent": "sr", "env": "x"}]:
        cfg.validate(resolve(overrides), agent_config_class(overrides["agent"]))


@cfg.config_class
class Declared:
    rate: float = cfg.option(0.1, "a step size", gt=0, batchable=True)
    share: float = cfg.option(0.5, "a fraction", ge=0, lt=1)
    width: int = cfg.option(3, "a width", ge=1)
    dims: tuple[int, ...] | None = cfg.option(None, "indices", ge=0)
    mode: str = cfg.option("a", "a mode", choices=("a", "b"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rate": 0.0}, "config key 'rate' must be a number > 0, got 0.0 (--rate VALUE)"),
        ({"share": 1.0}, "config key 'share' must be a number in [0, 1), got 1.0"),
        ({"width": 2.5}, "config key 'width' must be an integer >= 1, got 2.5"),
        ({"dims": "1,-2"}, "config key 'dims' must be a list of integers >= 0 or null, got (1, -2)"),
        ({"mode": "c"}, "config key 'mode' must be one of a, b, got 'c'"),
    ],
)
def test_a_declared_range_rejects_a_bad_value_in_one_line_naming_the_key(overrides, message):
    """The declaration is the whole check: no table, no agent code, the same for any config class."""
    with pytest.raises(cfg.ConfigError) as error:
        Declared(**overrides)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_declarations_give_batchable_keys_tuples_and_the_help_notes():
    assert cfg.batchable_keys(Declared) == ("rate",)
    assert Declared(dims="4,5").dims == (4, 5) and Declared(dims=[1]).dims == (1,) and Declared(dims="none").dims is None
    lines = {key.key: cfg.help_line(key) for key in cfg.describe(Declared)}
    assert lines["rate"] == "  --rate float (default 0.1, > 0, vmap-able): a step size"
    assert lines["share"] == "  --share float (default 0.5, in [0, 1)): a fraction"
    assert lines["mode"] == "  --mode str (default a, one of a|b): a mode"
    with pytest.raises(cfg.ConfigError, match="only numbers can be batched"):
        cfg.option("a", "text", batchable=True)
