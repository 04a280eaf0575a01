"""Evaluation envs of the built-in maze datasets (`docs/datasets.md` defines both tasks).

Both are gymnasium-robotics' PointMaze (a force-controlled ball, cells of side 1, row 0 at
the top) with flat observations and goals at the exact centre of a cell. gymnasium-robotics
adds up to +-0.25 of a cell of uniform noise to the goal at every reset; here the goal is
put back on the cell centre after the reset, so the evaluation reward is exactly the
reward the datasets are labelled with (`offrl.data.pointmaze`).

* maze2d (`make_maze2d_env`), D4RL maze2d: observation (x, y, vx, vy), the goal is NOT
  observed and is always the maze's one target cell (`MazeInfo.target_cell`). Every episode
  starts in a random free cell other than the target (with the env's +-0.25 position noise)
  and runs for the maze's D4RL length (300 / 600 / 800 steps); the task is continuing
  (reaching the target neither ends the episode nor moves it), so the sparse return counts
  the steps spent within `GOAL_RADIUS` of the target: reach and stay. Reward: sparse
  1{d <= 0.45} or, dense, exp(-d), d the ball's distance to the target after the step.
* pointmaze v1 (`make_pointmaze_env`), goal-conditioned as OGBench's navigate tasks:
  observation (x, y, vx, vy, goal_x, goal_y). Each episode is one (start cell, goal cell)
  task of `MazeInfo.tasks`; the reset seed picks the task (seed mod number of tasks, then
  the next task at each further reset), so a batch of evaluation envs seeded s, s+1, ...
  covers the tasks evenly. Reward 1 and `terminated` on the step that ends within
  `GOAL_RADIUS` of the goal, 0 otherwise; truncated at the step limit.

`maze_geometry` describes a maze env in the coordinates of its flat observations, for maps
over positions (`offrl.agents.fb.pointmaze_value_map`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from offrl.envs.robotics import gymnasium_robotics

maps = gymnasium_robotics.envs.maze.maps

GOAL_RADIUS = 0.45  # gymnasium-robotics' success distance (D4RL maze2d used 0.5)
POSITION_DIMS = (0, 1)  # (x, y) in the flat observation of both families
VELOCITY_DIMS = (2, 3)
GOAL_DIMS = (4, 5)  # pointmaze v1 only: the goal's (x, y)

Cell = tuple[int, int]
Task = tuple[Cell | None, Cell]  # (start cell or None for a random free cell, goal cell)


@dataclasses.dataclass(frozen=True)
class MazeInfo:
    """One maze: the registered env, its D4RL episode length and its evaluation tasks."""

    env_id: str
    maze_map: tuple[tuple[int, ...], ...]
    episode_steps: int  # D4RL maze2d length: evaluation episodes and dataset chunks
    target_cell: Cell  # maze2d: the one fixed target (D4RL maze2d's)
    tasks: tuple[tuple[Cell, Cell], ...]  # pointmaze v1: (start cell, goal cell) pairs

    def check_cell(self, cell: Cell) -> Cell:
        row, col = cell
        if not (0 <= row < len(self.maze_map) and 0 <= col < len(self.maze_map[0])) or self.maze_map[row][col] == 1:
            raise ValueError(f"cell {(row, col)} is not a free cell of {self.env_id}")
        return (int(row), int(col))

    def cell_center(self, cell: Cell) -> np.ndarray:
        """The (x, y) centre of cell (row, col), as gymnasium-robotics places it (scale 1)."""
        rows, cols = len(self.maze_map), len(self.maze_map[0])
        return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])


def _frozen(maze_map: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(cell) for cell in row) for row in maze_map)


# Targets: D4RL maze2d's (the goal cell Minari records for D4RL/pointmaze-*). Tasks for
# medium / large: OGBench's five navigate tasks, (init_ij, goal_ij) on the same maps (OGBench
# indexes rows the same way; its y axis points the other way, a mirror image that changes
# no path). umaze has no OGBench tasks: the full U both ways, and three shorter ones.
MAZES: dict[str, MazeInfo] = {
    "umaze": MazeInfo(
        "PointMaze_UMaze-v3", _frozen(maps.U_MAZE), 300, (1, 1),
        (((3, 1), (1, 1)), ((1, 1), (3, 1)), ((1, 3), (3, 1)), ((3, 3), (1, 1)), ((1, 2), (3, 2))),
    ),
    "medium": MazeInfo(
        "PointMaze_Medium-v3", _frozen(maps.MEDIUM_MAZE), 600, (6, 6),
        (((1, 1), (6, 6)), ((6, 1), (1, 6)), ((5, 3), (4, 2)), ((6, 5), (6, 1)), ((2, 6), (1, 1))),
    ),
    "large": MazeInfo(
        "PointMaze_Large-v3", _frozen(maps.LARGE_MAZE), 800, (7, 9),
        (((1, 1), (7, 10)), ((5, 4), (7, 1)), ((7, 4), (1, 10)), ((3, 8), (5, 4)), ((1, 1), (5, 4))),
    ),
}


def maze_info(maze: str) -> MazeInfo:
    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}; valid mazes: {sorted(MAZES)}")
    return MAZES[maze]


class MazeTaskEnv(gym.Wrapper):
    """A PointMaze env with exact cell-centre goals, cycling through `tasks`, flat observations.

    Wraps the registered env (its TimeLimit included). `goal_in_observation` appends the
    goal's (x, y) to (x, y, vx, vy). Whether reaching the goal terminates is the wrapped
    env's `continuing_task`.
    """

    def __init__(self, env: gym.Env, tasks: list[Task], goal_in_observation: bool):
        super().__init__(env)
        if not tasks:
            raise ValueError("MazeTaskEnv needs at least one (start cell, goal cell) task")
        self.tasks = list(tasks)
        self.goal_in_observation = goal_in_observation
        self.task_index = -1
        size = 6 if goal_in_observation else 4
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float64)

    @property
    def goal_cells(self) -> list[Cell]:
        return [goal for _, goal in self.tasks]

    def _observation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["observation"], np.float64)
        if self.goal_in_observation:
            return np.concatenate([state, self.env.unwrapped.goal])
        return state

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        self.task_index = seed % len(self.tasks) if seed is not None else (self.task_index + 1) % len(self.tasks)
        start, goal = self.tasks[self.task_index]
        obs, info = self.env.reset(seed=seed, options={"goal_cell": np.array(goal), "reset_cell": start})
        maze_env = self.env.unwrapped
        maze_env.goal = maze_env.maze.cell_rowcol_to_xy(np.array(goal))  # the exact centre, not the noisy draw
        maze_env.update_target_site_pos()
        info["success"] = bool(np.linalg.norm(obs["achieved_goal"] - maze_env.goal) <= GOAL_RADIUS)
        info["task"] = self.task_index
        return self._observation(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), float(reward), bool(terminated), bool(truncated), info


def make_maze2d_env(
    maze: str, dense: bool = False, render_mode: str | None = None, goal_cell: Cell | None = None,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """The maze2d evaluation env: fixed target at `goal_cell` (default the maze's target),
    random start cells, continuing, the D4RL episode length. `goal_cell` other than the
    target is for goal-reaching experiments (the reference scores then do not apply)."""
    info = maze_info(maze)
    goal = info.check_cell(info.target_cell if goal_cell is None else goal_cell)
    env = gym.make(
        info.env_id,
        reward_type="dense" if dense else "sparse",
        continuing_task=True,
        reset_target=False,
        max_episode_steps=info.episode_steps if max_episode_steps is None else max_episode_steps,
        render_mode=render_mode,
    )
    return MazeTaskEnv(env, [(None, goal)], goal_in_observation=False)


def make_pointmaze_env(
    maze: str,
    render_mode: str | None = None,
    goal_cell: Cell | None = None,
    tasks: list[tuple[Cell | None, Cell]] | None = None,
    max_episode_steps: int | None = None,
    continuing: bool = False,
) -> gym.Env:
    """The goal-conditioned (v1) evaluation env: episodes end at the goal (terminated) or
    after `max_episode_steps` (default the maze's D4RL length). Tasks default to the maze's
    five (start, goal) pairs; `goal_cell` instead gives one goal from random start cells.
    `continuing=True` keeps the episode going at the goal (reach and stay), for experiments
    with other rewards (e.g. `negative_distance`); it is not the v1 task."""
    info = maze_info(maze)
    if goal_cell is not None and tasks is not None:
        raise ValueError("pass goal_cell or tasks, not both")
    if goal_cell is not None:
        tasks = [(None, goal_cell)]
    elif tasks is None:
        tasks = list(info.tasks)
    tasks = [(None if start is None else info.check_cell(start), info.check_cell(goal)) for start, goal in tasks]
    env = gym.make(
        info.env_id,
        reward_type="sparse",
        continuing_task=continuing,
        reset_target=False,
        max_episode_steps=max_episode_steps or info.episode_steps,
        render_mode=render_mode,
    )
    return MazeTaskEnv(env, tasks, goal_in_observation=True)


def sparse_reward(positions: Any, goal: Any) -> np.ndarray:
    """1 where the ball (x, y) is within `GOAL_RADIUS` of `goal`, else 0 (both families)."""
    return (np.linalg.norm(np.asarray(positions, np.float64) - np.asarray(goal, np.float64), axis=-1) <= GOAL_RADIUS).astype(
        np.float64
    )


def dense_reward(positions: Any, goal: Any) -> np.ndarray:
    """exp(-d), d the distance of the ball to `goal`: D4RL maze2d-dense's and gymnasium-robotics'."""
    return np.exp(-np.linalg.norm(np.asarray(positions, np.float64) - np.asarray(goal, np.float64), axis=-1))


def negative_distance(observations: Any, goal: Any, position_dims: tuple[int, int] = POSITION_DIMS) -> np.ndarray:
    """A dense reward for FB zero-shot experiments: minus the ball's distance to `goal` (x, y),
    for raw flat observations [..., obs_dim] whose position sits at `position_dims`."""
    return -np.linalg.norm(np.asarray(observations)[..., list(position_dims)] - np.asarray(goal), axis=-1)


@dataclasses.dataclass(frozen=True)
class MazeGeometry:
    """A maze env's maze in the coordinates of its flat observations.

    The maze is centred on the origin with square cells of side `cell_size`, row 0 at the
    top (gymnasium-robotics' layout, which `offrl.agents.fb.value_landscape` assumes too).
    """

    free_cells: np.ndarray  # [rows, cols], True where there is no wall
    cell_size: float
    position_dims: list[tuple[int, int]]  # (x, y) index pairs of the ball's position
    base_observation: np.ndarray  # a flat reset observation of the env, velocity zero
    goal_xy: np.ndarray | None  # centre of the env's goal cell; None if its tasks have several

    def cell_center(self, cell: Cell) -> np.ndarray:
        """The (x, y) centre of cell (row, col)."""
        rows, cols = self.free_cells.shape
        row, col = cell
        return np.array([(col + 0.5 - cols / 2) * self.cell_size, (rows / 2 - row - 0.5) * self.cell_size])

    def observation_at(self, xy: Any) -> np.ndarray:
        """`base_observation` with the ball at `xy` (every position pair), at rest."""
        observation = self.base_observation.copy()
        for x_dim, y_dim in self.position_dims:
            observation[[x_dim, y_dim]] = xy
        return observation


def maze_geometry(env_factory: Callable[..., gym.Env], seed: int = 0) -> MazeGeometry:
    """The geometry of the maze env `env_factory()` builds (e.g. a `DatasetSpec`'s), its
    base observation from a reset with `seed`. ValueError for any other env."""
    env = env_factory()
    try:
        if not isinstance(env, MazeTaskEnv):
            raise ValueError(f"a maze2d or pointmaze env is needed, not {env.spec.id if env.spec else env}")
        maze = env.unwrapped.maze
        observation, _ = env.reset(seed=seed)
        goal_cells = set(env.goal_cells)
    finally:
        env.close()
    base = np.asarray(observation, np.float32).copy()
    base[list(VELOCITY_DIMS)] = 0.0
    goal_xy = maze.cell_rowcol_to_xy(np.array(next(iter(goal_cells)))) if len(goal_cells) == 1 else None
    return MazeGeometry(
        free_cells=np.array([[cell != 1 for cell in row] for row in maze.maze_map]),
        cell_size=float(maze.maze_size_scaling),
        position_dims=[POSITION_DIMS],
        base_observation=base,
        goal_xy=goal_xy,
    )
