"""Typed configs: every agent key and run setting has a type, default and doc, and
`scripts/train.py --help` (with `--agent X`) lists them all."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from offrl.agents import REGISTRY, agent_config_class, agent_names, get_agent
from offrl import config as cfg
from offrl.cli import main_guard
from offrl.experiment import resolve

from offrl.cli import train as train_script


def help_output(capsys, argv: list[str]) -> str:
    assert train_script.main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", agent_names())
def test_every_agent_key_is_declared_with_a_doc(name):
    _, defaults = get_agent(name)
    keys = cfg.describe(agent_config_class(name), defaults)
    assert [key.key for key in keys] == list(defaults)
    assert all(key.doc and key.type for key in keys), [key.key for key in keys if not key.doc]
    cls = getattr(importlib.import_module(REGISTRY[name][0]), REGISTRY[name][1])
    assert defaults == {**dataclasses.asdict(cls.config_class()), **REGISTRY[name][2]}


def test_every_run_setting_is_declared_with_a_doc():
    keys = cfg.describe(cfg.RunConfig)
    assert sorted(key.key for key in keys) == cfg.valid_keys(cfg.RUN_DEFAULTS)
    assert all(key.doc and key.type for key in keys)
    assert "wandb.mode" in {key.key for key in keys}


@pytest.mark.parametrize("name", agent_names())
def test_help_lists_every_agent_key_and_run_setting(capsys, name):
    out = help_output(capsys, ["--agent", name, "--help"])
    _, defaults = get_agent(name)
    lines = out.splitlines()
    for key in [*defaults, *cfg.valid_keys(cfg.RUN_DEFAULTS)]:
        assert any(line.startswith(f"  --{key} ") for line in lines), f"--help for {name} lacks --{key}"
    assert f"{name} hyperparameters" in out and "run settings:" in out and "run settings, wandb.* group:" in out


def test_help_line_shows_type_default_and_doc_and_the_default_agent_is_iql_ddpg(capsys):
    out = help_output(capsys, ["--help"])
    assert out.startswith("Train an agent:")
    assert "agents: " + ", ".join(agent_names()) in out
    assert "iql-ddpg hyperparameters (offrl.agents.iql.IQLConfig;" in out
    # The registry override, not the module default (awr), is the agent's default.
    assert "  --extraction str (default ddpg, one of awr|ddpg|dawr): " in out
    assert "  --max_steps int (default 1000000, >= 1, derived): set by the training loop" in out
    assert "  --hidden_dims tuple[int, ...] (default 256,256, >= 1): " in out
    assert "  --expectile float (default 0.7, strictly between 0 and 1, vmap-able): " in out
    assert "  --wandb.tags list[str] (default []): " in out
    assert "  --dataset str | None (default null): " in out
    td3bc = help_output(capsys, ["--agent=td3bc", "-h"])
    assert "  --actor_lr float (default 0.0003, > 0, vmap-able): Adam step size of the actor\n" in td3bc
    assert "  --alpha float (default 2.5, > 0, vmap-able): " in td3bc
    assert "  --extraction " not in td3bc


def test_help_for_an_unknown_agent_is_one_line_naming_the_valid_ones(capsys):
    assert main_guard(lambda: train_script.main(["--agent", "iql-typo", "--help"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown agent 'iql-typo'; valid agents: bc, fb,") and err.count("\n") == 1


def test_a_field_without_a_doc_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        rate: float = cfg.option(0.1, "documented")
        width: int = 3

    with pytest.raises(cfg.ConfigError, match="config key 'width' of Undocumented has no doc"):
        cfg.describe(Undocumented)


def test_list_defaults_are_not_shared_between_instances():
    first, second = cfg.RunConfig(), cfg.RunConfig()
    assert first.wandb.tags == [] and first.wandb.tags is not second.wandb.tags
    assert cfg.RUN_DEFAULTS["wandb"]["tags"] is not dataclasses.asdict(cfg.RunConfig())["wandb"]["tags"]


@pytest.mark.parametrize("argv", [["--actor_lr", "3e-4"], ["--actor_lr=1e-05"], ["--actor-lr=3E-4"]])
def test_exponent_learning_rates_parse_as_floats(argv):
    expected = float(argv[-1].split("=")[-1])
    config = resolve({"agent": "iql-ddpg", **cfg.parse_overrides(argv)})
    assert config["actor_lr"] == expected and type(config["actor_lr"]) is float


@pytest.mark.parametrize(
    "value, text", [(None, "null"), (True, "true"), ((256, 256), "256,256"), ((), "[]"), (float("inf"), ".inf"), (3e-4, "0.0003")]
)
def test_defaults_print_as_they_are_typed_on_the_command_line(value, text):
    assert cfg.format_value(value) == text
    parsed = cfg.parse_yaml(text)
    if isinstance(value, tuple):
        assert cfg._coerce("key", parsed, value) == value
    else:
        assert parsed == value
