"""The D4RL HDF5 loader against a per-row reimplementation of `d4rl.qlearning_dataset`."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from offrl.data import DatasetError, dataset_family, load_dataset
from offrl.data.d4rl import apply_reward_convention, infer_family, load_d4rl_hdf5
from offrl.envs.scores import D4RL_REF_SCORES, d4rl_ref_scores, normalized_score

# Row flags chosen to hit every awkward case; comments give the episode structure.
#   rows 0-3: an episode cut by a timeout on row 3
#   row 4:    a one-step episode that terminates, right after the timeout
#   rows 5-6: terminal and timeout on the same row (6)
#   row 7:    a one-step episode cut by a timeout
#   rows 8-10: an episode that terminates on row 10
#   rows 11-12: an episode that terminates on row 12, followed by a timeout row 13 that is a whole episode
#   rows 14-17: an episode ending on the file's last row (timeout there)
TERMINALS = np.zeros(18, bool)
TIMEOUTS = np.zeros(18, bool)
TERMINALS[[4, 6, 10, 12]] = True
TIMEOUTS[[3, 6, 7, 13, 17]] = True


def reference_qlearning(observations, actions, rewards, terminals, timeouts) -> dict[str, np.ndarray]:
    """D4RL's qlearning_dataset loop (terminate_on_end=False), plus episode ends found the way
    IQL finds them: a kept row ends its trajectory when it is terminal or when the next kept
    row is not its successor in the file (or there is no next kept row)."""
    kept = []
    for i in range(len(rewards) - 1):
        if timeouts[i]:
            continue
        kept.append(i)
    out = {
        "observations": [observations[i] for i in kept],
        "actions": [actions[i] for i in kept],
        "rewards": [rewards[i] for i in kept],
        "next_observations": [observations[i + 1] for i in kept],
        "terminals": [float(terminals[i]) for i in kept],
        "episode_ends": [],
    }
    for j, i in enumerate(kept):
        last = j == len(kept) - 1
        out["episode_ends"].append(float(terminals[i] or last or kept[j + 1] != i + 1))
    return {key: np.asarray(value, np.float32) for key, value in out.items()}


def write_d4rl(path: Path, **columns: np.ndarray) -> Path:
    """A file in D4RL's layout: flat top-level columns plus the infos/metadata D4RL also stores."""
    with h5py.File(path, "w") as file:
        for key, value in columns.items():
            file.create_dataset(key, data=value)
        file.create_dataset("infos/qpos", data=np.zeros((len(columns["rewards"]), 3)))
        file.create_dataset("metadata/algorithm", data="SAC")
    return path


def awkward_columns(seed: int = 0, n: int = 18, obs_dim: int = 11, act_dim: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": TERMINALS[:n].copy(),
        "timeouts": TIMEOUTS[:n].copy(),
    }


def assert_matches_reference(transitions, reference: dict[str, np.ndarray]) -> None:
    assert len(transitions) == len(reference["rewards"])
    for key, expected in reference.items():
        np.testing.assert_array_equal(getattr(transitions, key), expected, err_msg=key)


def test_matches_qlearning_dataset_row_by_row(tmp_path):
    columns = awkward_columns()
    path = write_d4rl(tmp_path / "data.hdf5", **columns)
    transitions = load_d4rl_hdf5(path)
    assert_matches_reference(transitions, reference_qlearning(**columns))
    # spot checks of the cases named above, in output-row terms
    kept = [i for i in range(17) if not TIMEOUTS[i]]
    assert 3 not in kept and 6 not in kept and 7 not in kept and 13 not in kept and 16 in kept
    ends = {kept[j] for j in np.flatnonzero(transitions.episode_ends)}
    assert ends == {2, 4, 5, 10, 12, 16}
    assert transitions.terminals.sum() == 3  # rows 4, 10, 12; row 6 is dropped with its timeout


def test_unfinished_last_episode_and_column_shapes(tmp_path):
    """A file cut mid-episode (no flag on the last row) and (N, 1) reward/flag columns."""
    columns = awkward_columns(seed=1, n=16)
    reference = reference_qlearning(**columns)
    columns["rewards"] = columns["rewards"][:, None]
    columns["terminals"] = columns["terminals"].astype(np.float32)[:, None]
    transitions = load_d4rl_hdf5(write_d4rl(tmp_path / "cut.hdf5", **columns))
    assert_matches_reference(transitions, reference)
    assert transitions.episode_ends[-1] == 1.0
    assert transitions.observations.dtype == np.float32


def test_reference_handles_random_flags(tmp_path):
    rng = np.random.default_rng(3)
    columns = awkward_columns(seed=3, n=500)
    columns["terminals"] = rng.random(500) < 0.05
    columns["timeouts"] = rng.random(500) < 0.05
    transitions = load_d4rl_hdf5(write_d4rl(tmp_path / "random.hdf5", **columns))
    assert_matches_reference(transitions, reference_qlearning(**columns))


def test_locomotion_reward_scaling(tmp_path):
    columns = awkward_columns(seed=2)
    reference = reference_qlearning(**columns)
    path = write_d4rl(tmp_path / "hopper_medium_replay-v2.hdf5", **columns)
    raw = load_d4rl_hdf5(path, reward_convention=False)
    scaled = load_d4rl_hdf5(path)  # family inferred from the name
    np.testing.assert_array_equal(raw.rewards, reference["rewards"])
    episode_returns, current = [], 0.0
    for reward, end in zip(reference["rewards"], reference["episode_ends"]):
        current += float(reward)
        if end:
            episode_returns.append(current)
            current = 0.0
    expected = reference["rewards"] / (max(episode_returns) - min(episode_returns)) * 1000.0
    np.testing.assert_allclose(scaled.rewards, expected, rtol=1e-5)
    np.testing.assert_allclose(np.ptp(scaled.episode_returns()), 1000.0, rtol=1e-4)
    np.testing.assert_array_equal(scaled.observations, raw.observations)


def test_antmaze_and_maze2d_conventions(tmp_path):
    columns = awkward_columns(seed=4)
    columns["rewards"] = (np.arange(18) % 2).astype(np.float32)
    raw = load_d4rl_hdf5(write_d4rl(tmp_path / "plain.hdf5", **columns))
    antmaze = load_d4rl_hdf5(write_d4rl(tmp_path / "antmaze-umaze-v2.hdf5", **columns))
    maze2d = load_d4rl_hdf5(write_d4rl(tmp_path / "maze2d-umaze-v1.hdf5", **columns))
    explicit = load_d4rl_hdf5(tmp_path / "plain.hdf5", family="antmaze")
    np.testing.assert_array_equal(antmaze.rewards, raw.rewards - 1.0)
    np.testing.assert_array_equal(explicit.rewards, raw.rewards - 1.0)
    np.testing.assert_array_equal(maze2d.rewards, raw.rewards)
    assert apply_reward_convention(raw, None) is raw
    with pytest.raises(ValueError, match="family"):
        apply_reward_convention(raw, "atari")
    with pytest.raises(ValueError, match="family"):
        load_d4rl_hdf5(tmp_path / "plain.hdf5", family="atari")


def test_family_inference():
    assert infer_family("/data/halfcheetah_medium_expert-v2.hdf5") == "locomotion"
    assert infer_family("walker2d-random-v2") == "locomotion"
    assert infer_family("antmaze-large-diverse-v2.hdf5") == "antmaze"
    assert infer_family("maze2d-large-v1") == "maze2d"
    assert infer_family("pen-human-v1.hdf5") is None
    # Names that only contain a D4RL env or dataset name are not D4RL datasets.
    for name in ("my-hopper-run.hdf5", "hopper-medium-v2-mine.hdf5", "new-antmaze-umaze-v2.hdf5", "hopper.hdf5"):
        assert infer_family(name) is None, name


def write_locomotion_like(path: Path, obs_dim: int = 11, act_dim: int = 3, **overrides: np.ndarray) -> Path:
    """Hopper-shaped rows in episodes of 6 steps whose returns differ (for the locomotion scaling)."""
    rng = np.random.default_rng(0)
    n = 36
    columns = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": (np.arange(n) % 6 == 5),
    }
    return write_d4rl(path, **{**columns, **overrides})


def test_reward_convention_is_explicit(tmp_path, capsys):
    official = str(write_locomotion_like(tmp_path / "hopper-medium-v2.hdf5"))
    mine = str(write_locomotion_like(tmp_path / "my-hopper-run.hdf5"))
    raw, _ = load_dataset(official, d4rl_reward="none")
    assert "rewards as stored (d4rl_reward=none" in capsys.readouterr().out
    scaled, spec = load_dataset(official)  # auto: an exact D4RL id gets its convention
    assert "locomotion convention" in capsys.readouterr().out
    np.testing.assert_allclose(np.ptp(scaled.episode_returns()), 1000.0, rtol=1e-4)
    assert spec.family == "locomotion" and spec.ref_max_score == 3234.3
    untouched, spec = load_dataset(mine, env_id="Hopper-v5")  # auto: not a D4RL id, rewards kept
    np.testing.assert_array_equal(untouched.rewards, raw.rewards)
    assert spec.family == "hdf5" and spec.ref_max_score is None
    forced, spec = load_dataset(mine, env_id="Hopper-v5", d4rl_reward="locomotion")
    np.testing.assert_allclose(forced.rewards, scaled.rewards)
    assert spec.family == "locomotion" and dataset_family(mine, "locomotion") == "locomotion"
    shifted, _ = load_dataset(mine, env_id="Hopper-v5", d4rl_reward="antmaze")
    np.testing.assert_array_equal(shifted.rewards, raw.rewards - 1.0)
    with pytest.raises(ValueError, match="d4rl_reward must be one of auto, none, locomotion, antmaze"):
        load_dataset(mine, d4rl_reward="hopper")


@pytest.mark.parametrize(
    "obs_dim, act_dim, message",
    [(7, 3, r"observations have shape \(7,\) per row but env Hopper-v5 observes \(11,\)"),
     (11, 2, r"actions have shape \(2,\) per row but env Hopper-v5 takes \(3,\)")],
)
def test_shapes_are_checked_against_the_env_on_loading(tmp_path, obs_dim, act_dim, message):
    path = write_locomotion_like(tmp_path / "hopper-medium-v2.hdf5", obs_dim=obs_dim, act_dim=act_dim)
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(str(path))
    assert str(path) in str(error.value) and "--env" in str(error.value) and "\n" not in str(error.value)
    other = write_locomotion_like(tmp_path / "mine.hdf5", obs_dim=obs_dim, act_dim=act_dim)
    with pytest.raises(DatasetError, match=message):  # an env given with --env is checked the same way
        load_dataset(str(other), env_id="Hopper-v5")


def test_integer_actions_follow_the_env_action_space(tmp_path, capsys):
    n = 36
    discrete = write_locomotion_like(tmp_path / "cartpole.hdf5", obs_dim=4, actions=np.arange(n) % 2)
    with pytest.raises(DatasetError, match=r"actions are int64, not floats; give the env with --env ENV_ID"):
        load_dataset(str(discrete))
    transitions, _ = load_dataset(str(discrete), env_id="CartPole-v1")
    assert "integer actions kept as indices of CartPole-v1's Discrete(2)" in capsys.readouterr().out
    assert transitions.actions.dtype == np.float32 and transitions.actions.shape[1:] == (1,)
    kept_rows = np.flatnonzero(np.arange(n - 1) % 6 != 5)  # timeout rows and the last row are dropped
    np.testing.assert_array_equal(transitions.actions[:, 0], kept_rows % 2)
    out_of_range = write_locomotion_like(tmp_path / "three.hdf5", obs_dim=4, actions=np.arange(n) % 3)
    with pytest.raises(DatasetError, match=r"actions range over \[0, 2\] but env CartPole-v1 has Discrete\(2\)"):
        load_dataset(str(out_of_range), env_id="CartPole-v1")
    box = write_locomotion_like(tmp_path / "box.hdf5", actions=np.ones((n, 3), np.int32))
    transitions, _ = load_dataset(str(box), env_id="Hopper-v5")
    assert "read as continuous values" in capsys.readouterr().out and transitions.actions.dtype == np.float32
    outside = write_locomotion_like(tmp_path / "outside.hdf5", actions=np.full((n, 3), 2, np.int32))
    with pytest.raises(DatasetError, match="integer actions outside the bounds"):
        load_dataset(str(outside), env_id="Hopper-v5")


def test_reference_scores_table():
    assert d4rl_ref_scores("hopper_medium_replay-v2") == (-20.272305, 3234.3)
    assert d4rl_ref_scores("halfcheetah-expert-v2") == (-280.178953, 12135.0)
    assert d4rl_ref_scores("walker2d-medium-expert-v2") == (1.629008, 4592.3)
    assert d4rl_ref_scores("antmaze-large-play-v0") == (0.0, 1.0)
    assert d4rl_ref_scores("maze2d-medium-v1") == (13.13, 277.39)
    assert d4rl_ref_scores("pen-human-v1") is None
    assert len(D4RL_REF_SCORES) == 3 * 5 + 6 * 2 + 3
    np.testing.assert_allclose(normalized_score([-20.272305, 3234.3], -20.272305, 3234.3), [0.0, 100.0])
    with pytest.raises(ValueError):
        normalized_score(1.0, 2.0, 2.0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.pop("timeouts"), "timeouts"),
        (lambda c: c.update(actions=c["actions"][:-1]), "different numbers of rows"),
        (lambda c: c["observations"].__setitem__((5, 2), np.nan), "NaN or Inf"),
        (lambda c: c["rewards"].__setitem__(7, np.inf), "NaN or Inf"),
        (lambda c: c.update(rewards=np.array([b"x"] * 18)), "non-numeric"),
        (lambda c: c.update(terminals=np.zeros((18, 2))), "one value per row"),
    ],
    ids=["missing-key", "mismatched-lengths", "nan", "inf", "string-dtype", "bad-shape"],
)
def test_bad_files_are_rejected(tmp_path, mutate, message):
    columns = awkward_columns()
    mutate(columns)
    path = write_d4rl(tmp_path / "bad.hdf5", **columns)
    with pytest.raises(DatasetError, match=message) as error:
        load_d4rl_hdf5(path)
    assert str(path) in str(error.value)


def test_missing_and_non_hdf5_files(tmp_path):
    missing = tmp_path / "nowhere.hdf5"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_d4rl_hdf5(missing)
    text = tmp_path / "text.hdf5"
    text.write_text("<html>404</html>")
    with pytest.raises(DatasetError, match="not an HDF5 file") as error:
        load_d4rl_hdf5(text)
    assert str(text) in str(error.value)


def test_no_transition_left(tmp_path):
    columns = awkward_columns(n=3)
    columns["timeouts"] = np.array([True, True, False])
    with pytest.raises(DatasetError, match="no transition"):
        load_d4rl_hdf5(write_d4rl(tmp_path / "tiny.hdf5", **columns))
