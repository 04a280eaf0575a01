"""benchmarks/peer_iql.py: d3rlpy's dataset holds exactly offrl's transitions, and the comparison
runs end to end. Marked `peers` (deselected by default): `python -m pytest -m peers` after
installing the peers extra (docs/testing.md)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.peers
d3rlpy = pytest.importorskip("d3rlpy", reason='the peers extra: pip install -e ".[peers]" && pip install --no-deps d3rlpy==2.8.1')

from benchmarks import peer_iql  # noqa: E402
from offrl.transitions import make_transitions  # noqa: E402


def episodic_rows(lengths: list[int], terminal_last: list[bool], seed: int = 0):
    """Rows of consecutive episodes, each a walk whose next observation is the next row's observation."""
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
    for length, terminal in zip(lengths, terminal_last):
        walk = rng.normal(size=(length + 1, 4)).astype(np.float32)
        parts["observations"].append(walk[:-1])
        parts["next_observations"].append(walk[1:])
        parts["actions"].append(rng.uniform(-1, 1, size=(length, 2)))
        parts["rewards"].append(rng.uniform(size=length))
        done = np.zeros(length)
        done[-1] = 1.0
        parts["episode_ends"].append(done)
        parts["terminals"].append(done if terminal else np.zeros(length))
    return make_transitions(**{name: np.concatenate(values) for name, values in parts.items()})


def test_converted_dataset_holds_every_transition():
    rows = episodic_rows([7, 5, 9, 3], [False, True, False, True])
    dataset = peer_iql.to_mdp_dataset(rows)
    peer_iql.check_same_transitions(rows, dataset)  # raises on any difference
    assert sum(episode.transition_count for episode in dataset.episodes) == len(rows) == 24


def test_check_catches_the_dropped_last_steps():
    """Handing d3rlpy the raw rows loses the last step of every timed-out episode; the check says so."""
    rows = episodic_rows([7, 5, 9], [False, True, False])
    naive = d3rlpy.dataset.MDPDataset(
        observations=rows.observations,
        actions=rows.actions,
        rewards=rows.rewards.reshape(-1, 1),
        terminals=rows.terminals,
        timeouts=rows.episode_ends * (1 - rows.terminals),
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )
    with pytest.raises(AssertionError, match="d3rlpy holds 19 transitions, offrl 21"):
        peer_iql.check_same_transitions(rows, naive)


def test_rows_out_of_episode_order_are_refused():
    rows = episodic_rows([6, 6], [False, False])
    shuffled = rows[np.random.default_rng(0).permutation(len(rows))]
    with pytest.raises(ValueError, match="episode"):
        peer_iql.to_mdp_dataset(shuffled)


def test_comparison_trains_and_scores_both_learners(small_umaze_id: str, capsys: pytest.CaptureFixture[str]):
    """The benchmark's own command, tiny: both learners train on the checked rows and are scored
    on the same episodes, one table row each."""
    argv = ["--dataset", small_umaze_id, "--seeds", "0,1", "--steps", "200", "--eval-episodes", "3"]
    assert peer_iql.main(argv) == 0
    out = capsys.readouterr().out
    assert "d3rlpy holds the same" in out
    table_rows = [line for line in out.splitlines() if line.startswith("| offrl iql-awr") or line.startswith("| d3rlpy")]
    assert len(table_rows) == 2, out
