import numpy as np
import pytest

from offrl.envs.gridworld import GridWorld, collect_uniform_dataset, goal_reaching_success, parse_layout

UP, RIGHT, DOWN, LEFT = range(4)


def test_four_rooms_has_104_free_cells_and_stochastic_rows():
    env = GridWorld()
    assert env.num_states == 104
    P = env.transition_matrix()
    assert P.shape == (104, 4, 104)
    np.testing.assert_allclose(P.sum(-1), 1.0)
    assert set(np.unique(P)) == {0.0, 1.0}


def test_walls_block_and_moves_follow_action_order():
    env = GridWorld()
    corner = env.cell_to_state((1, 1))
    assert env.next_state(corner, UP) == corner
    assert env.next_state(corner, LEFT) == corner
    assert env.state_to_cell(env.next_state(corner, RIGHT)) == (1, 2)
    assert env.state_to_cell(env.next_state(corner, DOWN)) == (2, 1)
    # (1, 5) has the interior wall at (1, 6) to its right.
    beside_wall = env.cell_to_state((1, 5))
    assert env.next_state(beside_wall, RIGHT) == beside_wall
    with pytest.raises(ValueError):
        env.cell_to_state((1, 6))


def test_shortest_paths_through_doorways():
    env = GridWorld()
    D = env.shortest_path_lengths()
    assert (D >= 0).all()
    np.testing.assert_array_equal(D, D.T)  # moves are reversible
    a, b = env.cell_to_state((1, 1)), env.cell_to_state((11, 11))
    # Manhattan distance 20 is achievable through the doorways at (3, 6) and (7, 9)
    # or (6, 2) and (10, 6).
    assert D[a, b] == 20
    # Opposite sides of the wall at column 6: (1, 5) -> (1, 7) must detour via (3, 6).
    assert D[env.cell_to_state((1, 5)), env.cell_to_state((1, 7))] == 6


def test_gym_api_goal_and_time_limit():
    env = GridWorld(goal=(1, 3), max_episode_steps=5)
    obs, info = env.reset(seed=0, options={"start": (1, 1)})
    assert obs.shape == (104,) and obs.dtype == np.float32 and obs[info["state"]] == 1.0
    obs, reward, terminated, truncated, _ = env.step(RIGHT)
    assert (reward, terminated, truncated) == (0.0, False, False)
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert env.state_to_cell(info["state"]) == (1, 3)

    env.reset(options={"start": (1, 1)})
    results = [env.step(UP) for _ in range(5)]
    assert [r[3] for r in results] == [False] * 4 + [True]

    index_env = GridWorld(observation="index")
    obs, _ = index_env.reset(seed=1)
    assert index_env.observation_space.contains(int(obs))


def test_uniform_dataset_is_consistent_with_dynamics():
    env = GridWorld(goal=(1, 3))
    data = collect_uniform_dataset(env, num_steps=1050, seed=0, episode_length=100)
    assert len(data) == 1050
    assert data.observations.shape == (1050, 104) and data.actions.shape == (1050, 1)
    s = data.observations.argmax(-1)
    s_next = data.next_observations.argmax(-1)
    a = data.actions[:, 0].astype(int)
    assert set(np.unique(a)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(s_next, env.transition_matrix()[s, a].argmax(-1))
    # Consecutive rows chain within an episode and episodes end every 100 rows (plus the last row).
    ends = np.flatnonzero(data.episode_ends)
    np.testing.assert_array_equal(ends, [99, 199, 299, 399, 499, 599, 699, 799, 899, 999, 1049])
    inside = np.setdiff1d(np.arange(1049), ends)
    np.testing.assert_array_equal(s[inside + 1], s_next[inside])
    np.testing.assert_array_equal(data.rewards, (s_next == env.goal).astype(np.float32))
    assert data.terminals.sum() == 0


def test_parse_layout_rejects_unknown_characters():
    assert parse_layout("###\n#.#\n###").sum() == 1
    with pytest.raises(ValueError):
        parse_layout("#G#")


def test_goal_reaching_success_counts_pairs_within_the_slack():
    env = GridWorld()
    D = env.shortest_path_lengths()
    # Shortest-path moves: the first action whose next state is one step closer to the goal.
    closer = np.array([[np.argmax(D[env._next_state[s], g] < D[s, g]) for s in range(env.num_states)] for g in range(env.num_states)])
    assert goal_reaching_success(env, closer) == 1.0
    assert goal_reaching_success(env, np.zeros_like(closer)) < 0.5  # always "up"
    # Detour: from the corner, going right first costs two extra moves, so a goal 2 moves
    # away is missed at slack 1.5 (3 moves) and reached at slack 2 (4 moves).
    corner, goal = env.cell_to_state((1, 1)), env.cell_to_state((3, 1))
    detour = closer.copy()
    detour[goal, corner] = RIGHT
    pairs = env.num_states * (env.num_states - 1)
    assert goal_reaching_success(env, detour) == pytest.approx(1.0 - 1.0 / pairs)
    assert goal_reaching_success(env, detour, slack=2.0) == 1.0
