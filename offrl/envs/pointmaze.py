"""PointMaze evaluation tasks, as Minari's `D4RL/pointmaze` datasets define them.

Minari records, with each of its D4RL pointmaze datasets, an evaluation env that is the
maze the data came from with exactly one goal cell (the D4RL maze2d target) and no fixed
reset cell, so every episode starts at a random free cell (with position noise) away
from the goal. The task is continuing (`continuing_task=True`, `reset_target=False`):
reaching the goal neither ends the episode nor moves the goal, so with the sparse reward
the return is the number of steps spent within 0.45 of the goal. Episodes are cut by the
registered D4RL time limits: 300 / 600 / 800 steps for umaze / medium / large.

The data-collection env (`eval=False`) is the registered maze with every free cell a
possible goal, continuing and re-drawing the goal whenever it is reached.

`maze_geometry` describes a PointMaze env's maze in the coordinates of flat observations,
for maps over positions (`agents.fb.pointmaze_value_map`) and goals at chosen cells.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from offrl.envs import flatten_observation
from offrl.envs.robotics import gymnasium_robotics

maps = gymnasium_robotics.envs.maze.maps

GOAL = maps.GOAL


@dataclasses.dataclass(frozen=True)
class PointMazeTask:
    """One maze: the registered env, its D4RL episode length and the evaluation goal cell."""

    env_id: str
    maze_map: tuple[tuple[int, ...], ...]
    episode_steps: int
    eval_goal_cell: tuple[int, int]

    def eval_maze_map(self, goal_cell: tuple[int, int] | None = None) -> list[list[int | str]]:
        """The maze with the goal cell (default: the evaluation goal cell) marked, as
        gymnasium-robotics reads it."""
        rows: list[list[int | str]] = [list(row) for row in self.maze_map]
        row, col = self.eval_goal_cell if goal_cell is None else goal_cell
        if not (0 <= row < len(rows) and 0 <= col < len(rows[0])) or rows[row][col] == 1:
            raise ValueError(f"goal cell {(row, col)} is not a free cell of {self.env_id}")
        rows[row][col] = GOAL
        return rows


def _frozen(maze_map: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(cell) for cell in row) for row in maze_map)


EVAL_TASKS: dict[str, PointMazeTask] = {
    "umaze": PointMazeTask("PointMaze_UMaze-v3", _frozen(maps.U_MAZE), 300, (1, 1)),
    "medium": PointMazeTask("PointMaze_Medium-v3", _frozen(maps.MEDIUM_MAZE), 600, (6, 6)),
    "large": PointMazeTask("PointMaze_Large-v3", _frozen(maps.LARGE_MAZE), 800, (7, 9)),
}


def pointmaze_task(maze: str) -> PointMazeTask:
    if maze not in EVAL_TASKS:
        raise ValueError(f"unknown maze {maze!r}; valid mazes: {sorted(EVAL_TASKS)}")
    return EVAL_TASKS[maze]


def make_pointmaze_env(
    maze: str, eval: bool = True, render_mode: str | None = None, goal_cell: tuple[int, int] | None = None
) -> gym.Env:
    """The evaluation env (fixed goal, random start) or, with `eval=False`, the collection env.

    `goal_cell` (row, col) moves the evaluation goal to another free cell, for goal-reaching
    tasks other than the D4RL one (the reference scores then no longer apply). Observations
    are gymnasium's dicts (achieved_goal, desired_goal, observation); both envs use the
    sparse reward and the D4RL episode length of the maze.
    """
    task = pointmaze_task(maze)
    if eval:
        return gym.make(
            task.env_id,
            maze_map=task.eval_maze_map(goal_cell),
            continuing_task=True,
            reset_target=False,
            max_episode_steps=task.episode_steps,
            render_mode=render_mode,
        )
    return gym.make(
        task.env_id,
        continuing_task=True,
        reset_target=True,
        max_episode_steps=task.episode_steps,
        render_mode=render_mode,
    )


def pointmaze_layout(space: spaces.Dict) -> tuple[list[tuple[int, int]], list[int]]:
    """In a flattened PointMaze observation: the (x, y) index pairs of the ball's position
    (achieved_goal and observation[:2]) and the velocity indices (observation[2:4])."""
    offsets, start = {}, 0
    for key, subspace in space.spaces.items():
        offsets[key] = start
        start += spaces.flatdim(subspace)
    achieved, own = offsets["achieved_goal"], offsets["observation"]
    return [(achieved, achieved + 1), (own, own + 1)], [own + 2, own + 3]


def negative_distance(observations: Any, goal: Any, position_dims: tuple[int, int]) -> np.ndarray:
    """A dense reward: minus the ball's distance to `goal` (x, y), for raw flat observations
    [..., obs_dim] whose position sits at `position_dims` (see `pointmaze_layout`)."""
    return -np.linalg.norm(np.asarray(observations)[..., list(position_dims)] - np.asarray(goal), axis=-1)


@dataclasses.dataclass(frozen=True)
class MazeGeometry:
    """A PointMaze env's maze in the coordinates of its flat observations.

    The maze is centred on the origin with square cells of side `cell_size`, row 0 at the
    top (gymnasium-robotics' layout, which `agents.fb.value_landscape` assumes too).
    """

    free_cells: np.ndarray  # [rows, cols], True where there is no wall
    cell_size: float
    position_dims: list[tuple[int, int]]  # (x, y) index pairs of the ball's position
    base_observation: np.ndarray  # a flat reset observation of the env, velocity zero
    goal_xy: np.ndarray | None  # centre of the env's goal cell; None if it has several

    def cell_center(self, cell: tuple[int, int]) -> np.ndarray:
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
    """The geometry of the PointMaze env `env_factory()` builds (e.g. a `DatasetSpec`'s),
    its base observation from a reset with `seed`. ValueError for any other env."""
    env = env_factory()
    try:
        if not isinstance(env.unwrapped, gymnasium_robotics.envs.maze.point_maze.PointMazeEnv):
            raise ValueError(f"a PointMaze env is needed, not {env.spec.id if env.spec else env}")
        maze = env.unwrapped.maze
        observation, _ = env.reset(seed=seed)
        space = env.observation_space
    finally:
        env.close()
    base = flatten_observation(space, observation)
    positions, velocities = pointmaze_layout(space)
    base[velocities] = 0.0
    # The goal cell as gymnasium-robotics places it (its centre; episodes add position noise).
    goal_xy = np.asarray(maze.unique_goal_locations[0]) if len(maze.unique_goal_locations) == 1 else None
    return MazeGeometry(
        free_cells=np.array([[cell != 1 for cell in row] for row in maze.maze_map]),
        cell_size=float(maze.maze_size_scaling),
        position_dims=positions,
        base_observation=base,
        goal_xy=goal_xy,
    )
