"""A discrete gridworld whose dynamics are known exactly.

Tabular successor representations and FB representations can only be checked against
ground truth when the transition matrix is available; this environment exposes it
(`transition_matrix`) together with BFS distances, so tests can compare learned
quantities with `(I - gamma P_pi)^-1` and learned policies with shortest paths.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.transitions import Transitions, make_transitions

# Sutton, Precup & Singh (1999): an 11x11 interior split into four rooms by walls with
# four one-cell doorways; 104 free cells.
FOUR_ROOMS = """
#############
#.....#.....#
#.....#.....#
#...........#
#.....#.....#
#.....#.....#
##.####.....#
#.....###.###
#.....#.....#
#.....#.....#
#...........#
#.....#.....#
#############
"""

# Corridor mazes for goal reaching over long horizons (issue 23): perfect mazes (one path
# between any two cells) carved by a seeded depth-first search on a grid of 2x2 blocks, so
# they are all corridors, junctions and dead ends. CORRIDOR_MAZE: 59 free cells, 6 dead
# ends, 4 junctions, shortest paths up to 44 moves (mean 15.9). CORRIDOR_MAZE_WIDE: 71
# free cells, 5 dead ends, 3 junctions, shortest paths up to 54 moves (mean 19.2).
CORRIDOR_MAZE = """
#############
#...#.......#
###.#####.#.#
#...#.....#.#
#.###.#####.#
#.#...#...#.#
#.###.#.###.#
#.....#.#...#
#######.#.###
#...........#
#############
"""

CORRIDOR_MAZE_WIDE = """
#############
#.#.........#
#.#######.###
#.......#...#
#######.#.#.#
#...#...#.#.#
###.#.#####.#
#...#.....#.#
#.#######.#.#
#.#.......#.#
#.#.#######.#
#...........#
#############
"""

# Shortest-path bands (inclusive move counts) in which goal-reaching success is reported:
# far goals are where a short horizon fails, and an overall rate hides them.
DISTANCE_BANDS: tuple[tuple[int, int], ...] = ((1, 10), (11, 20), (21, 30), (31, 10**9))

# Row and column offsets of the four actions, in the action-index order up, right, down, left.
ACTION_OFFSETS = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int64)


def parse_layout(layout: str) -> np.ndarray:
    """Boolean [rows, cols] array, True where the cell is free ('.'), False for walls ('#')."""
    lines = [line for line in layout.strip("\n").splitlines() if line.strip()]
    width = max(len(line) for line in lines)
    grid = np.zeros((len(lines), width), dtype=bool)
    for r, line in enumerate(lines):
        for c, char in enumerate(line):
            if char not in "#.":
                raise ValueError(f"layout may only contain '#' and '.', got {char!r} at row {r}, column {c}")
            grid[r, c] = char == "."
    return grid


class GridWorld(gym.Env):
    """Deterministic moves on a text-map grid; moving into a wall (or off the map) stays put.

    States are the free cells in row-major order. Observations are a one-hot float32 vector
    (`observation="onehot"`, what function approximators need) or the int state index
    (`observation="index"`). With a `goal` (a state index or a (row, col) cell), reaching
    it gives reward 1 and terminates the episode; without one the reward is always 0.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        layout: str = FOUR_ROOMS,
        goal: int | tuple[int, int] | None = None,
        max_episode_steps: int | None = None,
        observation: str = "onehot",
    ) -> None:
        if observation not in ("onehot", "index"):
            raise ValueError(f"observation must be 'onehot' or 'index', got {observation!r}")
        self.grid = parse_layout(layout)
        self.free_cells: np.ndarray = np.argwhere(self.grid)  # [num_states, 2] (row, col)
        self.num_states = len(self.free_cells)
        self._cell_index = -np.ones(self.grid.shape, dtype=np.int64)
        self._cell_index[self.grid] = np.arange(self.num_states)
        self.goal = None if goal is None else self._as_state(goal)
        self.max_episode_steps = max_episode_steps
        self.observation_type = observation
        self.action_space = gym.spaces.Discrete(4)
        if observation == "onehot":
            self.observation_space = gym.spaces.Box(0.0, 1.0, (self.num_states,), np.float32)
        else:
            self.observation_space = gym.spaces.Discrete(self.num_states)
        self._next_state = self._build_next_state()
        self._state = 0
        self._steps = 0

    def _as_state(self, state_or_cell: int | tuple[int, int]) -> int:
        if isinstance(state_or_cell, (tuple, list, np.ndarray)):
            index = int(self._cell_index[tuple(state_or_cell)])
            if index < 0:
                raise ValueError(f"cell {tuple(state_or_cell)} is a wall")
            return index
        if not 0 <= int(state_or_cell) < self.num_states:
            raise ValueError(f"state {state_or_cell} out of range [0, {self.num_states})")
        return int(state_or_cell)

    def _build_next_state(self) -> np.ndarray:
        targets = self.free_cells[:, None, :] + ACTION_OFFSETS[None, :, :]  # [S, A, 2]
        rows, cols = targets[..., 0], targets[..., 1]
        inside = (rows >= 0) & (rows < self.grid.shape[0]) & (cols >= 0) & (cols < self.grid.shape[1])
        clipped = self._cell_index[rows.clip(0, self.grid.shape[0] - 1), cols.clip(0, self.grid.shape[1] - 1)]
        target_index = np.where(inside, clipped, -1)
        stay = np.broadcast_to(np.arange(self.num_states)[:, None], target_index.shape)
        return np.where(target_index >= 0, target_index, stay)

    def state_to_cell(self, state: int) -> tuple[int, int]:
        row, col = self.free_cells[state]
        return int(row), int(col)

    def cell_to_state(self, cell: tuple[int, int]) -> int:
        return self._as_state(cell)

    def next_state(self, state: int, action: int) -> int:
        return int(self._next_state[state, action])

    def observe(self, state: int | np.ndarray) -> np.ndarray:
        """The observation of a state (or of an array of states)."""
        state = np.asarray(state)
        if self.observation_type == "index":
            return state.astype(np.int64)
        return np.eye(self.num_states, dtype=np.float32)[state]

    def transition_matrix(self) -> np.ndarray:
        """P[s, a, s'] of the moves alone (the goal's termination is not folded in)."""
        P = np.zeros((self.num_states, 4, self.num_states), dtype=np.float64)
        s, a = np.meshgrid(np.arange(self.num_states), np.arange(4), indexing="ij")
        P[s, a, self._next_state] = 1.0
        return P

    def shortest_path_lengths(self) -> np.ndarray:
        """D[s, g]: fewest moves from s to g (BFS); -1 where g is unreachable from s."""
        D = -np.ones((self.num_states, self.num_states), dtype=np.int64)
        for source in range(self.num_states):
            D[source, source] = 0
            queue = deque([source])
            while queue:
                state = queue.popleft()
                for nxt in self._next_state[state]:
                    if D[source, nxt] < 0:
                        D[source, nxt] = D[source, state] + 1
                        queue.append(nxt)
        return D

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Start in `options["start"]` (state or cell) if given, else a uniform non-goal cell."""
        super().reset(seed=seed)
        options = options or {}
        if "start" in options:
            self._state = self._as_state(options["start"])
        else:
            candidates = [s for s in range(self.num_states) if s != self.goal]
            self._state = int(self.np_random.choice(candidates))
        self._steps = 0
        return self.observe(self._state), {"state": self._state}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._state = self.next_state(self._state, int(np.asarray(action).reshape(())))
        self._steps += 1
        reached = self.goal is not None and self._state == self.goal
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not reached
        return self.observe(self._state), float(reached), bool(reached), bool(truncated), {"state": self._state}


def horizon_gamma(diameter: int) -> float:
    """The discount for greedy goal reaching on a layout whose longest shortest path is
    `diameter` moves: gamma = 1 - 2 / (diameter + 1), a horizon 1 / (1 - gamma) of half the
    diameter (plus a half).

    Why: a greedy step toward a goal k moves away needs F's error below the gap between the
    move along the path and a move away, gamma^(k-1) (1 - gamma^2) in units of one visit
    of the goal, and F's error grows with the size of the measure it regresses, about
    1 / (1 - gamma). The gap relative to that size, gamma^(k-1) (1 - gamma^2) (1 - gamma),
    is largest within 0.003 of gamma = 1 - 2 / (k + 1) for k >= 20 (0.0004 at 54); the
    farthest goal (k = diameter) sets the rule. A shorter horizon also lets the bootstrapped
    targets converge sooner (their lag decays as exp(-updates * tau * (1 - gamma))). On the
    corridor mazes it beats the horizon of the full diameter (studies/fb_corridors/README.md)."""
    if diameter < 2:
        raise ValueError(f"diameter must be at least 2 moves, got {diameter}")
    return 1.0 - 2.0 / (diameter + 1)


def goal_reaching_outcomes(env: GridWorld, policies: np.ndarray, slack: float = 1.5) -> np.ndarray:
    """Bool [goal, start]: whether the moves `policies[goal, state]` (int [num_states,
    num_states]) reach the goal from the start within floor(slack x shortest path)."""
    distances = env.shortest_path_lengths()
    goals = np.arange(env.num_states)[:, None]
    states = np.broadcast_to(np.arange(env.num_states)[None, :], distances.shape).copy()
    budgets = np.floor(slack * distances.T).astype(np.int64)  # [goal, start]
    reached = states == goals
    for step in range(int(budgets.max())):
        moving = ~reached & (step < budgets)
        states = np.where(moving, env._next_state[states, policies[goals, states]], states)
        reached |= moving & (states == goals)
    return reached


def goal_reaching_success(env: GridWorld, policies: np.ndarray, slack: float = 1.5) -> float:
    """Fraction of (start, goal != start) pairs from which the moves `policies[goal, state]`
    (int [num_states, num_states]) reach the goal within floor(slack x shortest path)."""
    reached = goal_reaching_outcomes(env, policies, slack)
    pairs = ~np.eye(env.num_states, dtype=bool)
    return float(reached[pairs].mean())


def goal_reaching_by_band(
    env: GridWorld, policies: np.ndarray, slack: float = 1.5, bands: tuple[tuple[int, int], ...] = DISTANCE_BANDS
) -> dict[str, float]:
    """Success over all (start, goal != start) pairs ("all") and within each shortest-path
    band ("1-10", ..., "31+"); bands the layout has no pairs in are left out."""
    reached = goal_reaching_outcomes(env, policies, slack)
    distances = env.shortest_path_lengths().T  # [goal, start], as `reached`
    result = {"all": float(reached[distances > 0].mean())}
    for low, high in bands:
        in_band = (distances >= low) & (distances <= high)
        if in_band.any():
            result[f"{low}+" if high >= 10**9 else f"{low}-{high}"] = float(reached[in_band].mean())
    return result


def collect_uniform_dataset(env: GridWorld, num_steps: int, seed: int, episode_length: int = 100) -> Transitions:
    """Uniform-random-policy episodes of `episode_length` steps from uniform start cells.

    Observations are one-hot float32 whatever `env.observation_type` is, and actions are
    the action index as float32 [N, 1]. Episodes never terminate, even on the goal: the
    reward (1 on entering the goal, if the env has one) is recorded, but the data is
    meant for reward-free learning of the dynamics, so every cut is a time limit
    (`terminals` all 0, `episode_ends` 1 on each episode's last row).
    """
    rng = np.random.default_rng(seed)
    num_episodes = -(-num_steps // episode_length)
    states = np.empty((num_episodes, episode_length + 1), dtype=np.int64)
    actions = rng.integers(0, 4, size=(num_episodes, episode_length))
    states[:, 0] = rng.integers(0, env.num_states, size=num_episodes)
    for t in range(episode_length):
        states[:, t + 1] = env._next_state[states[:, t], actions[:, t]]
    ends = np.zeros((num_episodes, episode_length), dtype=np.float32)
    ends[:, -1] = 1.0
    next_states = states[:, 1:].reshape(-1)[:num_steps]
    rewards = np.zeros(num_steps) if env.goal is None else (next_states == env.goal).astype(np.float32)
    onehot = np.eye(env.num_states, dtype=np.float32)
    ends = ends.reshape(-1)[:num_steps]
    ends[-1] = 1.0
    return make_transitions(
        observations=onehot[states[:, :-1].reshape(-1)[:num_steps]],
        actions=actions.reshape(-1)[:num_steps, None],
        rewards=rewards,
        next_observations=onehot[next_states],
        terminals=np.zeros(num_steps),
        episode_ends=ends,
    )
