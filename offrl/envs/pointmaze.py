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
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym

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

    def eval_maze_map(self) -> list[list[int | str]]:
        """The maze with the evaluation goal cell marked, as gymnasium-robotics reads it."""
        rows: list[list[int | str]] = [list(row) for row in self.maze_map]
        row, col = self.eval_goal_cell
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


def make_pointmaze_env(maze: str, eval: bool = True, render_mode: str | None = None) -> gym.Env:
    """The evaluation env (fixed goal, random start) or, with `eval=False`, the collection env.

    Observations are gymnasium's dicts (achieved_goal, desired_goal, observation); both
    envs use the sparse reward and the D4RL episode length of the maze.
    """
    task = pointmaze_task(maze)
    if eval:
        return gym.make(
            task.env_id,
            maze_map=task.eval_maze_map(),
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
