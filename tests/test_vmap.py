"""Hyperparameters as a batch axis: `--vmap` must train each (value, seed) member exactly as
the single run with that value and seed would, lay each out as a run of its own, resume,
and refuse what one compiled program cannot vary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offrl import config as cfg
from offrl.experiment import resolve, restore_run
from offrl.runner import run
from offrl.vmap import combination_name, combinations, format_vmap, parse_vmap

from test_train import leaves, tiny_config

GRID = "expectile=0.6,0.9,actor_lr=0.001,0.0003"
SETTINGS = {"agent": "iql-awr", "steps": 200, "eval_interval": 200, "seed": 3, "num_seeds": 2}


@pytest.fixture(scope="module")
def grid_run(small_umaze_id, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vmap") / "grid"
    summary = run(tiny_config(small_umaze_id, run_dir, vmap=GRID, **SETTINGS), progress=False)
    return run_dir, summary


def member_dir(run_dir, expectile: float, actor_lr: float, seed: int):
    return run_dir / combination_name({"expectile": expectile, "actor_lr": actor_lr}) / f"seed{seed}"


@pytest.mark.parametrize("expectile, actor_lr, seed", [(0.6, 0.001, 4), (0.9, 0.0003, 3)])
def test_members_equal_single_runs(small_umaze_id, grid_run, tmp_path, expectile, actor_lr, seed):
    run_dir, summary = grid_run
    single_dir = tmp_path / "single"
    settings = {**SETTINGS, "seed": seed, "num_seeds": 1}
    single = run(tiny_config(small_umaze_id, single_dir, expectile=expectile, actor_lr=actor_lr, **settings), progress=False)
    member = json.loads((member_dir(run_dir, expectile, actor_lr, seed) / "summary.json").read_text())
    assert member["return_mean"] == pytest.approx(single["return_mean"], rel=1e-4, abs=1e-4)
    assert member["success_rate"] == single["success_rate"]
    batched_state, _, step = restore_run(member_dir(run_dir, expectile, actor_lr, seed))
    single_state, _, single_step = restore_run(single_dir)
    assert step == single_step == 200
    assert float(batched_state.agent.config.expectile) == pytest.approx(expectile)
    for a, b in zip(leaves(batched_state), leaves(single_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_members_differ_by_their_hyperparameters(grid_run):
    run_dir, _ = grid_run
    base = restore_run(member_dir(run_dir, 0.6, 0.001, 3))[0].agent
    other_expectile = restore_run(member_dir(run_dir, 0.9, 0.001, 3))[0].agent
    other_lr = restore_run(member_dir(run_dir, 0.6, 0.0003, 3))[0].agent
    assert any(not np.allclose(a, b) for a, b in zip(leaves(base.value.params), leaves(other_expectile.value.params)))
    assert any(not np.allclose(a, b) for a, b in zip(leaves(base.actor.params), leaves(other_lr.actor.params)))
    # The actor's learning rate moves the actor only: value and critic see the same batches.
    for a, b in zip(leaves((base.value.params, base.critic.params)), leaves((other_lr.value.params, other_lr.critic.params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grid_layout_summaries_and_wandb_group(grid_run):
    run_dir, summary = grid_run
    assert summary["vmap"] == {"expectile": [0.6, 0.9], "actor_lr": [0.001, 0.0003]}
    assert [(row["expectile"], row["actor_lr"]) for row in summary["combinations"]] == [
        (0.6, 0.001), (0.6, 0.0003), (0.9, 0.001), (0.9, 0.0003)]
    assert json.loads((run_dir / "summary.json").read_text())["combinations"] == summary["combinations"]
    for row in summary["combinations"]:
        combination = {"expectile": row["expectile"], "actor_lr": row["actor_lr"]}
        combo_dir = run_dir / combination_name(combination)
        assert [seed_row["seed"] for seed_row in row["seeds"]] == [3, 4]
        assert row["return_mean"] == pytest.approx(np.mean([seed_row["return_mean"] for seed_row in row["seeds"]]))
        # The combination's directory is a --num-seeds run of its own, each seed a single run.
        combo_config = json.loads((combo_dir / "config.json").read_text())
        assert combo_config["vmap"] is None and combo_config["num_seeds"] == 2
        assert combo_config["expectile"] == row["expectile"] and combo_config["actor_lr"] == row["actor_lr"]
        for seed in (3, 4):
            seed_config = json.loads((combo_dir / f"seed{seed}" / "config.json").read_text())
            assert seed_config["seed"] == seed and seed_config["num_seeds"] == 1 and seed_config["vmap"] is None
            assert seed_config["expectile"] == row["expectile"]
            assert seed_config["wandb"]["group"] == "grid"
            assert seed_config["wandb"]["name"] == f"grid-{combination_name(combination)}-seed{seed}"
            assert (combo_dir / f"seed{seed}" / "checkpoints" / "200" / "state").is_dir()


def test_grid_resume_continues_every_member_exactly(small_umaze_id, grid_run, tmp_path):
    run_dir, summary = grid_run
    killed = tmp_path / "killed"
    config = tiny_config(small_umaze_id, killed, vmap=GRID, checkpoint_interval=100, **SETTINGS)
    assert run(config, stop_after=100, progress=False) == {}
    with pytest.raises(cfg.ConfigError, match="--steps 50 is below step 100"):
        run(resolve({"resume": str(killed), "steps": 50}), progress=False)
    resumed = run(resolve({"resume": str(killed)}), progress=False)
    assert [row["return_mean"] for row in resumed["combinations"]] == [row["return_mean"] for row in summary["combinations"]]
    for combination in combinations(parse_vmap(GRID)):
        for seed in (3, 4):
            a_state = restore_run(member_dir(killed, combination["expectile"], combination["actor_lr"], seed))[0]
            b_state = restore_run(member_dir(run_dir, combination["expectile"], combination["actor_lr"], seed))[0]
            for a, b in zip(leaves(a_state), leaves(b_state)):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "agent, vmap, message",
    [
        ("iql-awr", "hidden_dims=32,64", "--vmap hidden_dims: changes shapes or the code path"),
        ("iql-awr", "batch_size=32,64", "--vmap batch_size: changes shapes or the code path"),
        ("iql-awr", "extraction=awr,ddpg", "--vmap extraction: changes shapes or the code path"),
        ("iql-awr", "seed=0,1", "--vmap seed: seeds are batched with --num-seeds K"),
        ("iql-awr", "expectil=0.6,0.7", "--vmap expectil: unknown config key"),
        ("iql-awr", "expectile=0.6,1.5", "config key 'expectile' must be a number strictly between 0 and 1"),
        ("iql-awr", "expectile=0.6,0.6", "--vmap expectile: a value is repeated"),
        ("iql-awr", "temperature=hot", "config key 'temperature' expects float"),
    ],
)
def test_unbatchable_keys_are_refused(small_umaze_id, tmp_path, agent, vmap, message):
    run_dir = tmp_path / "refused"
    with pytest.raises(cfg.ConfigError, match=message.replace("(", r"\(")):
        run(tiny_config(small_umaze_id, run_dir, agent=agent, vmap=vmap, steps=10), progress=False)
    assert not run_dir.exists(), "a refused grid leaves no run directory"


def test_online_agents_refuse_vmap(tmp_path):
    with pytest.raises(cfg.ConfigError, match="--vmap is for offline agents"):
        resolve({"agent": "reinforce", "env": "CartPole-v1", "run_dir": str(tmp_path / "r"),
                 "vmap": "discount=0.9,0.99", "wandb.mode": "disabled"})


def test_parse_vmap_forms():
    assert parse_vmap("expectile=0.6,0.7,temperature=1,3") == {"expectile": [0.6, 0.7], "temperature": [1, 3]}
    assert parse_vmap({"expectile": [0.6, 0.7], "tau": 0.01}) == {"expectile": [0.6, 0.7], "tau": [0.01]}
    assert parse_vmap("actor-lr=3e-4,1e-3") == {"actor_lr": [3e-4, 1e-3]}
    assert parse_vmap(None) == {} and parse_vmap("") == {}
    grid = {"expectile": [0.6, 0.9], "actor_lr": [0.001, 0.0003]}
    assert parse_vmap(format_vmap(grid)) == grid
    assert combination_name({"expectile": 0.6, "max_weight": float("inf")}) == "expectile=0.6_max_weight=inf"
    for bad, message in [("0.6,0.7", "expected KEY=V1,V2"), ("expectile=", "no values given"),
                         ("expectile=0.6,expectile=0.7", "given twice"), ("=0.6", "without a key")]:
        with pytest.raises(cfg.ConfigError, match=message):
            parse_vmap(bad)


def fb_config(dataset: str, run_dir, **overrides) -> dict:
    return resolve({"agent": "fb", "dataset": dataset, "run_dir": str(run_dir), "steps": 100, "eval_interval": 100,
                           "z_dim": 8, "hidden_dim": 32, "feature_dim": 32, "backward_hidden_dim": 32, "batch_size": 64,
                           "updates_per_call": 50, "eval_episodes": 3, "wandb.mode": "disabled", **overrides})


def test_fb_batches_gamma_like_seeds(small_umaze_id, tmp_path):
    """Other agents batch their numeric keys the same way. FB's batched programs (seeds too,
    before --vmap existed) drift from a single run at rounding level on real data (the
    batched N x N products sum in another order), so a gamma member is checked against the
    --num-seeds run of the same shape exactly, and against the single run relative to how far
    the other gamma is."""
    grid, seeds, single = (restore_run(path)[0] for path in (
        run_and_dir(fb_config(small_umaze_id, tmp_path / "grid", vmap="gamma=0.9,0.99"), "gamma=0.99"),
        run_and_dir(fb_config(small_umaze_id, tmp_path / "seeds", gamma=0.99, num_seeds=2), "seed0"),
        run_and_dir(fb_config(small_umaze_id, tmp_path / "single", gamma=0.99), "."),
    ))
    other = restore_run(tmp_path / "grid" / "gamma=0.9")[0]
    for a, b in zip(leaves(grid), leaves(seeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(grid.agent.backward.params), leaves(single.agent.backward.params)))
    other_gap = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(other.agent.backward.params), leaves(single.agent.backward.params)))
    assert gap < 0.1 * other_gap, (gap, other_gap)


def run_and_dir(config: dict, member: str):
    run(config, progress=False)
    return Path(config["run_dir"]) / member
