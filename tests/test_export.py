"""scripts/export.py: a run's deterministic policy as a jax.export artefact that needs only jax
and numpy, acting exactly as the run's own evaluation policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl import load_policy
from offrl.envs import flatten_observations
from offrl.evaluation import evaluate_state, make_seeds_policy, run_episodes
from offrl.loop import stack_states
from offrl.policy import flatten, space_layout
from offrl.experiment import resolve, restore_run
from offrl.runner import run

from test_train import tiny_config

from offrl.cli import export as export_script

# Loads the artefact and acts on saved observations in a process that never imports offrl.
STANDALONE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from jax import export

    policy = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    observations = np.load(sys.argv[2])["observations"]
    np.save(sys.argv[3], np.asarray(policy.call(observations)))
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("offrl", "agents", "gymnasium", "flax"))
    print(json.dumps({"loaded": loaded}))
    """
)


@pytest.fixture(scope="module")
def normalized_run(small_umaze_id, tmp_path_factory):
    """iql-awr with normalized observations: the export must bake the statistics in."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    summary = run(tiny_config(small_umaze_id, run_dir, agent="iql-awr", steps=200, eval_interval=100,
                              normalize_observations=True), progress=False)
    return run_dir, summary


def standalone_actions(artefact: Path, observations: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.savez(tmp_path / "observations.npz", observations=observations)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # Only what jax needs beyond the interpreter's site-packages (flatbuffers may come from PYTHONPATH here).
    repo = Path(__file__).resolve().parent.parent
    paths = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if entry and not (Path(entry) / "offrl").is_dir() and Path(entry).resolve() != repo]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(artefact), str(tmp_path / "observations.npz"), str(tmp_path / "actions.npy")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["loaded"] == []
    return np.load(tmp_path / "actions.npy")


def test_exported_policy_acts_as_the_runs_evaluation_without_offrl(normalized_run, tmp_path):
    run_dir, summary = normalized_run
    out = tmp_path / "export"
    assert export_script.main([str(run_dir), "--out", str(out)]) == 0
    spec = json.loads((out / "policy.json").read_text())
    assert spec["step"] == 200 and spec["agent"] == "iql-awr" and spec["normalized_observations"]
    assert spec["observation"]["layout"] == {"type": "Box", "shape": [4], "dtype": "float64"}
    assert spec["action"]["space"]["type"] == "Box" and spec["action"]["space"]["shape"] == [2]
    assert spec["score"] == pytest.approx(summary["normalized_score"])

    # The observations of the run's own final evaluation, and the actions its policy takes on them.
    state, experiment, step = restore_run(run_dir, data=False)
    episodes = evaluate_state(state, experiment.spec, 3, 0, True, step)
    observations = episodes["observations"]
    assert np.abs(np.asarray(state.obs_std) - 1).max() > 0.1, "the statistics matter"
    evaluation_policy = make_seeds_policy(stack_states([state]), deterministic=True)
    expected = np.asarray(evaluation_policy(jnp.asarray(observations), jnp.stack([jax.random.PRNGKey(1)])))
    np.testing.assert_array_equal(standalone_actions(out / "policy.jax", observations, tmp_path), expected)
    np.testing.assert_array_equal(load_policy(run_dir)(observations), expected)

    # Acting in the evaluation env, the artefact scores what the run's summary says.
    from jax import export

    exported = export.deserialize(bytearray((out / "policy.jax").read_bytes()))
    from offrl.envs import make_eval_vector_env
    from offrl.evaluation import eval_env_seeds

    envs = make_eval_vector_env(experiment.spec, 3, 0)
    try:
        rollouts = run_episodes(envs, lambda obs, key: exported.call(obs), jax.random.PRNGKey(0), eval_env_seeds([0], 3))
    finally:
        envs.close()
    assert rollouts["returns"].mean() == pytest.approx(summary["return_mean"])


def test_discrete_actions_are_exported_as_indices(tmp_path):
    run_dir = tmp_path / "cartpole"
    run(resolve({"agent": "reinforce", "env": "CartPole-v1", "steps": 2, "episodes_per_update": 2, "eval_episodes": 2,
                        "hidden_dims": [16], "run_dir": str(run_dir), "wandb.mode": "disabled"}), progress=False)
    out = tmp_path / "export"
    assert export_script.main([str(run_dir), "--out", str(out)]) == 0
    spec = json.loads((out / "policy.json").read_text())
    assert spec["action"]["space"] == {"type": "Discrete", "n": 2, "start": 0}
    observations = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    actions = standalone_actions(out / "policy.jax", observations, tmp_path)
    assert actions.dtype == np.int32 and actions.shape == (16,)
    state, _, _ = restore_run(run_dir, data=False)
    expected = state.agent.sample_actions(jnp.asarray(observations), jax.random.PRNGKey(0), deterministic=True)
    np.testing.assert_array_equal(actions, np.asarray(expected).reshape(16, -1)[:, 0])


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,)), "achieved_goal": gym.spaces.Box(-1, 1, (2,)),
                         "desired_goal": gym.spaces.Box(-1, 1, (2,))}),
        gym.spaces.Tuple((gym.spaces.Discrete(4, start=1), gym.spaces.Box(-1, 1, (2, 3)))),
        gym.spaces.MultiBinary(5),
    ],
)
def test_baked_flattening_matches_the_envs_flattening(space):
    """What the artefact does to Dict/Tuple/Discrete observations is what evaluation does."""
    space.seed(0)
    samples = [space.sample() for _ in range(8)]
    if isinstance(space, gym.spaces.Dict):
        batch = {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    elif isinstance(space, gym.spaces.Tuple):
        batch = tuple(np.stack([sample[i] for sample in samples]) for i in range(len(space.spaces)))
    else:
        batch = np.stack(samples)
    layout = json.loads(json.dumps(space_layout(space)))  # as stored
    np.testing.assert_array_equal(np.asarray(flatten(layout, batch)), flatten_observations(space, batch))
