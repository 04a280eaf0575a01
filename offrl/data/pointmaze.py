"""Built-in maze datasets, generated locally the way D4RL maze2d was (`docs/datasets.md`).

One generator serves both families. A point mass moves through a gymnasium-robotics
PointMaze that is never reset: whenever it reaches the goal it is heading for, the env
draws a new random goal cell (with +-0.25 position noise) and the ball carries on from
where it is, as in D4RL's maze2d generator. A grid planner (value iteration on the maze's
cells) turns each goal into a path of waypoints (cell centres, the goal itself last) and a
PD controller, `action = 10 * (waypoint - position) - 1 * velocity`, follows it; Gaussian
noise (std 0.5 by default) is added to every action before clipping to [-1, 1], which is
what gives the data its action coverage (several behaviour modes per state). A goal not
reached within the maze's episode length is replaced by a new one (D4RL has no such rule;
it keeps a stuck controller from filling the data).

The stream of `steps` transitions is then labelled as one of two tasks:

* `offrl/maze2d/<maze>[-dense]-v0` (D4RL maze2d): observation (x, y, vx, vy); the reward is
  computed for the maze's one fixed target (`MazeInfo.target_cell`, its exact centre) at
  every step, sparse 1{d <= 0.45} or dense exp(-d), d the distance after the step; no
  terminals; the stream is cut into chunks of the evaluation length (300 / 600 / 800) that
  end in a timeout (truncation) and keep the true next observation.
* `offrl/pointmaze/<maze>-v1` (goal-conditioned): observation (x, y, vx, vy, goal_x, goal_y),
  the goal being the one the controller is heading for; each goal is one task: reward 1
  and a terminal on the step that reaches it (d <= 0.45), 0 before; the next task's goal
  appears from the following row on. Chunk ends and abandoned goals are truncations.

Ids: `offrl/maze2d/umaze-v0` (noise 0.5, 1M steps; medium 2M, large 4M), other settings
as e.g. `offrl/maze2d/umaze-dense-noise1p0-steps5000-v0` or `offrl/pointmaze/large-noise0p0-v1`
(Minari ids allow no '.', so the noise's decimal point is written 'p'; `noise1.0` names the
same dataset). An id is stored under its canonical form; the same id and seed give
byte-identical arrays. The old `offrl/pointmaze/<maze>-v0` ids are refused with the new ids.

Builds are safe to start from several processes at once: a build holds an exclusive lock
(`<dataset dir>.lock`), writes into a hidden directory of the store and renames it into
place when complete, so a dataset directory is either absent or whole. A process that
finds the lock held waits for it and then loads the finished dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Iterator

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from tqdm import tqdm

from offrl.data.minari_loader import open_minari_dataset, transitions_from_episodes, write_transitions_cache
from offrl.envs.pointmaze import (
    GOAL_RADIUS,
    MAZES,
    MazeInfo,
    dense_reward,
    make_maze2d_env,
    maze_info,
    sparse_reward,
)
from offrl.envs.robotics import gymnasium_robotics
from offrl.envs.scores import MAZE2D_REF_EPISODES, MAZE2D_REF_SEED, maze2d_ref_scores

Maze = gymnasium_robotics.envs.maze.maze_v4.Maze

MAZE2D = "offrl/maze2d"
POINTMAZE = "offrl/pointmaze"
FAMILIES = {"maze2d": (MAZE2D, "v0"), "pointmaze": (POINTMAZE, "v1")}
DEFAULT_NOISE = 0.5
DEFAULT_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}
P_GAIN = 10.0
D_GAIN = 1.0
WAYPOINT_THRESHOLD = 0.1
BUILD_DIR = ".offrl-build"  # hidden: Minari's listing skips it


@dataclasses.dataclass(frozen=True)
class MazeDatasetSettings:
    family: str  # 'maze2d' | 'pointmaze'
    maze: str
    noise: float
    steps: int
    dense: bool = False  # maze2d only

    @property
    def dataset_id(self) -> str:
        return maze_dataset_id(self.family, self.maze, self.noise, self.steps, self.dense)

    @property
    def info(self) -> MazeInfo:
        return MAZES[self.maze]


def _format_noise(noise: float) -> str:
    text = f"{noise:.6f}".rstrip("0")
    return (text + "0" if text.endswith(".") else text).replace(".", "p")


def maze_dataset_id(
    family: str, maze: str, noise: float = DEFAULT_NOISE, steps: int | None = None, dense: bool = False
) -> str:
    """The canonical id: default settings are left out, so the defaults are `offrl/maze2d/{maze}-v0`
    and `offrl/pointmaze/{maze}-v1`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown maze dataset family {family!r}; valid families: {sorted(FAMILIES)}")
    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}; valid mazes: {sorted(MAZES)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if dense and family != "maze2d":
        raise ValueError("only the maze2d family has a dense variant")
    namespace, version = FAMILIES[family]
    name = maze + ("-dense" if dense else "")
    if _format_noise(noise) != _format_noise(DEFAULT_NOISE):
        name += f"-noise{_format_noise(noise)}"
    if steps is not None and steps != DEFAULT_STEPS[maze]:
        name += f"-steps{steps}"
    return f"{namespace}/{name}-{version}"


def maze2d_dataset_id(maze: str, noise: float = DEFAULT_NOISE, steps: int | None = None, dense: bool = False) -> str:
    return maze_dataset_id("maze2d", maze, noise, steps, dense)


def pointmaze_dataset_id(maze: str, noise: float = DEFAULT_NOISE, steps: int | None = None) -> str:
    return maze_dataset_id("pointmaze", maze, noise, steps)


_SETTINGS = r"(?:-noise(?P<noise>\d+(?:[.p]\d+)?))?(?:-steps(?P<steps>\d+))?"
_MAZE = rf"(?P<maze>{'|'.join(MAZES)})"
_PATTERNS = {
    "maze2d": re.compile(rf"^{re.escape(MAZE2D)}/{_MAZE}(?P<dense>-dense)?{_SETTINGS}-v0$"),
    "pointmaze": re.compile(rf"^{re.escape(POINTMAZE)}/{_MAZE}{_SETTINGS}-v1$"),
}
_OLD_POINTMAZE = re.compile(rf"^{re.escape(POINTMAZE)}/{_MAZE}.*-v0$")


def is_builtin_id(dataset_id: str) -> bool:
    """Whether an id is in a built-in namespace (it may still be malformed)."""
    return dataset_id.startswith((MAZE2D + "/", POINTMAZE + "/"))


def parse_maze_id(dataset_id: str) -> MazeDatasetSettings | None:
    """The settings an id asks for, or None when it is not a built-in maze id."""
    for family, pattern in _PATTERNS.items():
        match = pattern.match(dataset_id)
        if match is None:
            continue
        maze = match["maze"]
        noise = float(match["noise"].replace("p", ".")) if match["noise"] is not None else DEFAULT_NOISE
        steps = int(match["steps"]) if match["steps"] is not None else DEFAULT_STEPS[maze]
        if steps < 1:
            return None
        return MazeDatasetSettings(family, maze, noise, steps, dense=bool(match.groupdict().get("dense")))
    return None


def builtin_ids() -> list[str]:
    """The default id of every maze and family (the dense maze2d variants included)."""
    return [
        *(maze2d_dataset_id(maze) for maze in MAZES),
        *(maze2d_dataset_id(maze, dense=True) for maze in MAZES),
        *(pointmaze_dataset_id(maze) for maze in MAZES),
    ]


def retired_id_message(dataset_id: str) -> str | None:
    """The error for an old `offrl/pointmaze/<maze>-v0` id, naming its replacements; None for other ids."""
    old = _OLD_POINTMAZE.match(dataset_id)
    if old is None:
        return None
    maze = old["maze"]
    return (
        f"{dataset_id!r} is a retired id (its data ended episodes at the goal but was scored on reach-and-stay); "
        f"use {maze2d_dataset_id(maze)} (fixed target, not observed: D4RL maze2d) or "
        f"{pointmaze_dataset_id(maze)} (goal-conditioned), see docs/datasets.md"
    )


def resolve_maze_id(dataset_id: str) -> MazeDatasetSettings:
    """Like `parse_maze_id`, but an unknown id is a one-line error naming the valid ones."""
    settings = parse_maze_id(dataset_id)
    if settings is not None:
        return settings
    raise ValueError(
        retired_id_message(dataset_id)
        or f"unknown built-in dataset {dataset_id!r}. Built-in datasets: {', '.join(builtin_ids())}; "
        f"other settings as e.g. {MAZE2D}/umaze-noise1p0-v0 or {POINTMAZE}/umaze-noise0p25-steps5000-v1"
    )


class MazePlanner:
    """Shortest paths between the free cells of a maze grid, by value iteration.

    Distances to every goal cell are solved once (V(goal) = 0, V(c) = 1 + min over the
    4-neighbours), so following a path costs one table lookup per waypoint.
    """

    MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def __init__(self, maze_map: list[list[int | str]] | tuple[tuple[int, ...], ...]):
        free = np.array([[cell != 1 for cell in row] for row in maze_map], dtype=bool)
        self.shape = free.shape
        self.cells = [tuple(int(i) for i in cell) for cell in np.argwhere(free)]
        self.index = {cell: i for i, cell in enumerate(self.cells)}
        n = len(self.cells)
        neighbours = np.full((n, len(self.MOVES)), -1, dtype=np.int64)
        for i, (row, col) in enumerate(self.cells):
            for k, (dr, dc) in enumerate(self.MOVES):
                neighbours[i, k] = self.index.get((row + dr, col + dc), -1)
        self.distances = self._value_iteration(neighbours)
        # next_index[g, c]: the neighbour of c one step closer to goal g (c itself at g).
        neighbour_distance = np.where(neighbours[None] >= 0, self.distances[:, neighbours], np.inf)
        best = np.argmin(neighbour_distance, axis=-1)
        self.next_index = np.where(
            np.arange(n)[None] == np.arange(n)[:, None], np.arange(n)[None], neighbours[np.arange(n)[None], best]
        )

    @staticmethod
    def _value_iteration(neighbours: np.ndarray) -> np.ndarray:
        n = len(neighbours)
        distances = np.full((n, n), np.inf)
        np.fill_diagonal(distances, 0.0)
        padded = np.concatenate([distances, np.full((n, 1), np.inf)], axis=1)
        while True:
            updated = np.minimum(distances, 1.0 + padded[:, neighbours].min(axis=-1))
            if np.array_equal(updated, distances):
                return distances
            distances = updated
            padded[:, :n] = distances

    def distance(self, start: tuple[int, int], goal: tuple[int, int]) -> float:
        return float(self.distances[self.index[goal], self.index[start]])

    def next_cell(self, cell: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int]:
        return self.cells[self.next_index[self.index[goal], self.index[cell]]]

    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Cells from `start` to `goal`, both included."""
        if not math.isfinite(self.distance(start, goal)):
            raise ValueError(f"no path from {start} to {goal}")
        cells = [start]
        while cells[-1] != goal:
            cells.append(self.next_cell(cells[-1], goal))
        return cells


class WaypointController:
    """D4RL's PD controller over the planner's waypoints.

    When the goal changes it plans from the ball's cell; it then steers to the centre of
    the next cell on the path, moves on once within `WAYPOINT_THRESHOLD` of it, and steers
    at the exact goal position on the goal's own cell (so it stays there once arrived).
    """

    def __init__(self, maze: Maze, planner: MazePlanner):
        self.planner = planner
        self.scale = maze.maze_size_scaling
        self.x_center = maze.x_map_center
        self.y_center = maze.y_map_center
        self.reset()

    def reset(self) -> None:
        """Forget the plan, so the next action replans even if the goal is unchanged."""
        self.goal = (math.nan, math.nan)
        self.goal_cell = (-1, -1)
        self.target_cell = (-1, -1)
        self.target = (math.nan, math.nan)

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        return (math.floor((self.y_center - y) / self.scale), math.floor((x + self.x_center) / self.scale))

    def centre_of(self, cell: tuple[int, int]) -> tuple[float, float]:
        return ((cell[1] + 0.5) * self.scale - self.x_center, self.y_center - (cell[0] + 0.5) * self.scale)

    def _aim_at(self, cell: tuple[int, int]) -> None:
        self.target_cell = cell
        self.target = self.goal if cell == self.goal_cell else self.centre_of(cell)

    def action(self, observation: np.ndarray, goal: np.ndarray) -> tuple[float, float]:
        """The noiseless, unclipped PD action; `observation` starts with (x, y, vx, vy)."""
        x, y, vx, vy = float(observation[0]), float(observation[1]), float(observation[2]), float(observation[3])
        gx, gy = float(goal[0]), float(goal[1])
        if (gx, gy) != self.goal:
            self.goal = (gx, gy)
            self.goal_cell = self.cell_of(gx, gy)
            self._aim_at(self.planner.next_cell(self.cell_of(x, y), self.goal_cell))
        elif self.target_cell != self.goal_cell and math.hypot(self.target[0] - x, self.target[1] - y) <= WAYPOINT_THRESHOLD:
            self._aim_at(self.planner.next_cell(self.target_cell, self.goal_cell))
        return (P_GAIN * (self.target[0] - x) - D_GAIN * vx, P_GAIN * (self.target[1] - y) - D_GAIN * vy)

    def clipped(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The noiseless action clipped to the action space, as a float32 array."""
        return np.clip(np.asarray(self.action(observation, goal), np.float32), -1.0, 1.0)


def controller_for(env: gym.Env) -> WaypointController:
    maze = env.unwrapped.maze
    return WaypointController(maze, MazePlanner(maze.maze_map))


def _draw_new_goal(maze_env, position: np.ndarray) -> None:
    """A new random goal not already reached, drawn as the env itself does on success."""
    maze_env.goal = maze_env.add_xy_position_noise(maze_env.generate_target_goal())
    while np.linalg.norm(position - maze_env.goal) <= GOAL_RADIUS:
        maze_env.goal = maze_env.add_xy_position_noise(maze_env.generate_target_goal())
    maze_env.update_target_site_pos()


@dataclasses.dataclass
class Rollout:
    """The flat stream of one collection run; row t is the state acted on at step t."""

    observation: np.ndarray  # (steps + 1, 4): x, y, vx, vy
    desired_goal: np.ndarray  # (steps + 1, 2): the goal being pursued at that state
    actions: np.ndarray  # (steps, 2) float32
    reached: np.ndarray  # (steps,) bool: step t ends within GOAL_RADIUS of desired_goal[t]
    abandoned: np.ndarray  # (steps,) bool: desired_goal[t] was replaced after step t unreached

    @property
    def steps(self) -> int:
        return len(self.actions)


def collect_rollout(maze: str, noise: float, steps: int, seed: int = 0, progress: bool = False) -> Rollout:
    """Drive the noisy controller through the continuing maze for `steps` steps.

    Steps the unwrapped env (the registered wrappers only add checks and a time limit the
    stream has none of), and draws action noise from a generator seeded apart from the
    env's own goal randomness, so one seed fixes every array.
    """
    info = maze_info(maze)
    env = gym.make(info.env_id, continuing_task=True, reset_target=True).unwrapped
    controller = controller_for(env)
    noise_rng = np.random.default_rng(seed)
    observation = np.empty((steps + 1, 4))
    desired_goal = np.empty((steps + 1, 2))
    actions = np.empty((steps, 2), dtype=np.float32)
    reached = np.zeros(steps, dtype=bool)
    abandoned = np.zeros(steps, dtype=bool)

    obs, _ = env.reset(seed=seed)
    observation[0] = obs["observation"]
    desired_goal[0] = env.goal
    since_goal = 0
    chunk = 10_000
    bar = tqdm(total=steps, desc=f"collecting {maze} (noise {noise:g})", unit="step", disable=not progress, mininterval=1.0)
    for chunk_start in range(0, steps, chunk):
        chunk_steps = min(chunk, steps - chunk_start)
        chunk_noise = noise * noise_rng.standard_normal((chunk_steps, 2))
        for k in range(chunk_steps):
            t = chunk_start + k
            ax, ay = controller.action(observation[t], desired_goal[t])
            action = np.clip(np.array((ax + chunk_noise[k, 0], ay + chunk_noise[k, 1]), dtype=np.float32), -1.0, 1.0)
            obs, _, _, _, step_info = env.step(action)
            actions[t] = action
            observation[t + 1] = obs["observation"]
            since_goal += 1
            if step_info["success"]:
                reached[t] = True  # the env has already drawn the next goal
            elif since_goal >= info.episode_steps:
                abandoned[t] = True
                _draw_new_goal(env, obs["achieved_goal"])
            if reached[t] or abandoned[t]:
                since_goal = 0
            desired_goal[t + 1] = env.goal
        bar.update(chunk_steps)
    bar.close()
    env.close()
    return Rollout(observation, desired_goal, actions, reached, abandoned)


def chunk_ends(steps: int, chunk: int) -> np.ndarray:
    """(steps,) bool: the last step of every `chunk`-step piece of the stream, and the last step."""
    ends = np.zeros(steps, dtype=bool)
    ends[chunk - 1 :: chunk] = True
    ends[-1] = True
    return ends


def maze2d_rewards(next_positions: np.ndarray, maze: str, dense: bool) -> np.ndarray:
    """The maze2d reward of transitions ending at `next_positions` (x, y): the labelling the
    datasets use and the evaluation env computes."""
    target = MAZES[maze].cell_center(MAZES[maze].target_cell)
    return dense_reward(next_positions, target) if dense else sparse_reward(next_positions, target)


def maze2d_episodes(rollout: Rollout, maze: str, dense: bool) -> list[EpisodeBuffer]:
    """The stream cut into chunks of the evaluation length, each ending in a timeout."""
    rewards = maze2d_rewards(rollout.observation[1:, :2], maze, dense)
    ends = np.flatnonzero(chunk_ends(rollout.steps, MAZES[maze].episode_steps))
    buffers, start = [], 0
    for episode_id, end in enumerate(ends.tolist()):
        length = end + 1 - start
        truncations = np.zeros(length, dtype=bool)
        truncations[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=episode_id,
                observations=rollout.observation[start : end + 2].copy(),
                actions=rollout.actions[start : end + 1],
                rewards=rewards[start : end + 1],
                terminations=np.zeros(length, dtype=bool),
                truncations=truncations,
                infos={},
            )
        )
        start = end + 1
    return buffers


def pointmaze_episodes(rollout: Rollout, maze: str) -> list[EpisodeBuffer]:
    """One episode per goal pursuit: a terminal (reward 1) where the goal is reached, a
    truncation where the goal is abandoned or a chunk of the evaluation length ends."""
    truncated = rollout.abandoned | chunk_ends(rollout.steps, MAZES[maze].episode_steps)
    ends = np.flatnonzero(rollout.reached | truncated)
    buffers, start = [], 0
    for episode_id, end in enumerate(ends.tolist()):
        length = end + 1 - start
        goal = rollout.desired_goal[start]
        observations = np.concatenate([rollout.observation[start : end + 2], np.broadcast_to(goal, (length + 1, 2))], axis=1)
        terminations = np.zeros(length, dtype=bool)
        truncations = np.zeros(length, dtype=bool)
        terminations[-1] = rollout.reached[end]
        truncations[-1] = not rollout.reached[end]
        buffers.append(
            EpisodeBuffer(
                id=episode_id,
                observations=observations,
                actions=rollout.actions[start : end + 1],
                rewards=rollout.reached[start : end + 1].astype(np.float64),
                terminations=terminations,
                truncations=truncations,
                infos={},
            )
        )
        start = end + 1
    return buffers


def reference_returns(
    maze: str, policy: str, episodes: int = MAZE2D_REF_EPISODES, seed: int = MAZE2D_REF_SEED
) -> dict[str, np.ndarray]:
    """Sparse and dense maze2d returns of `policy` ("random": uniform actions, or "controller":
    the noiseless controller heading for the target) over the evaluation env's episodes
    reset with seeds seed, seed + 1, ... (a training run with seed k evaluates from seeds
    10_000 + k + j, the same start states). Both rewards come from one trajectory: they
    are functions of the position."""
    env = make_maze2d_env(maze)
    controller = controller_for(env)
    target = MAZES[maze].cell_center(MAZES[maze].target_cell)
    returns = {"sparse": np.zeros(episodes), "dense": np.zeros(episodes)}
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            controller.reset()
            rng = np.random.default_rng(seed + episode)
            done = False
            while not done:
                if policy == "random":
                    action = rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
                elif policy == "controller":
                    action = controller.clipped(obs, target)
                else:
                    raise ValueError(f"unknown reference policy {policy!r}; use 'random' or 'controller'")
                obs, reward, terminated, truncated, _ = env.step(action)
                returns["sparse"][episode] += reward
                returns["dense"][episode] += float(dense_reward(obs[:2], target))
                done = terminated or truncated
    finally:
        env.close()
    return returns


def controller_discounted_value(
    maze: str, discount: float = 0.99, episodes: int = 50, seed: int = MAZE2D_REF_SEED, horizon: int = 1000
) -> np.ndarray:
    """The value of reaching the target and staying, V(s0) = sum_t discount^t r_t of the noiseless
    controller from the evaluation env's start states (seeds seed, seed + 1, ...), sparse
    reward, over `horizon` steps, past the evaluation's time limit (the data has no terminals, so
    a critic's Q estimates this infinite-horizon sum; 0.99^1000 < 5e-5). What a maze2d
    critic's mean Q should approach under an optimal policy, per start state."""
    env = make_maze2d_env(maze, max_episode_steps=horizon)
    controller = controller_for(env)
    target = MAZES[maze].cell_center(MAZES[maze].target_cell)
    values = np.zeros(episodes)
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            controller.reset()
            for step in range(horizon):
                obs, reward, _, _, _ = env.step(controller.clipped(obs, target))
                values[episode] += discount**step * float(reward)
    finally:
        env.close()
    return values


def measure_maze2d_ref_scores(
    maze: str, episodes: int = MAZE2D_REF_EPISODES, seed: int = MAZE2D_REF_SEED
) -> dict[str, tuple[float, float]]:
    """{'sparse': (random mean, controller mean), 'dense': (...)}: the numbers
    `offrl.envs.scores.MAZE2D_REF_SCORES` holds (`scripts/reference_scores.py` prints them)."""
    random, expert = reference_returns(maze, "random", episodes, seed), reference_returns(maze, "controller", episodes, seed)
    return {kind: (float(random[kind].mean()), float(expert[kind].mean())) for kind in ("sparse", "dense")}


def ref_scores(settings: MazeDatasetSettings) -> tuple[float, float]:
    """maze2d: the measured random / controller returns; pointmaze v1: (0, 1), so the
    normalized score is 100 x the success rate (the return is 1 at success, else 0)."""
    if settings.family == "pointmaze":
        return (0.0, 1.0)
    return maze2d_ref_scores(settings.maze, settings.dense)


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Minari writes new datasets under $MINARI_DATASETS_PATH: point it at `root` meanwhile."""
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = saved


def _build_root(dataset_id: str) -> Path:
    """Where builds of `dataset_id` write before the rename (one directory per process)."""
    return get_dataset_path() / BUILD_DIR / dataset_id.replace("/", "+")


def _write_dataset(settings: MazeDatasetSettings, seed: int, progress: bool) -> None:
    """Generate the dataset and move it into the store. The caller holds the lock."""
    dataset_id = settings.dataset_id
    final_path = get_dataset_path(dataset_id)
    build_root = _build_root(dataset_id)
    # Anything here is left by a killed build: no other build of this id runs while we hold the lock.
    shutil.rmtree(build_root, ignore_errors=True)
    if final_path.exists():  # incomplete (no data/metadata.json), or replaced by a rebuild
        if progress:
            print(f"removing the dataset directory {final_path}")
        shutil.rmtree(final_path)
    rollout = collect_rollout(settings.maze, settings.noise, settings.steps, seed=seed, progress=progress)
    info = settings.info
    if settings.family == "maze2d":
        episodes = maze2d_episodes(rollout, settings.maze, settings.dense)
        space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
        target = info.target_cell
        description = (
            f"D4RL maze2d semantics on {info.env_id}: observation (x, y, vx, vy); "
            f"{'dense exp(-d)' if settings.dense else f'sparse 1(d <= {GOAL_RADIUS})'} reward for the fixed target at "
            f"the centre of cell {target}, never observed; no terminals; chunks of {info.episode_steps} steps ending in "
            f"a timeout. Evaluation: return over {info.episode_steps} steps from random starts, target fixed (reach and stay)."
        )
    else:
        episodes = pointmaze_episodes(rollout, settings.maze)
        space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float64)
        description = (
            f"Goal-conditioned on {info.env_id}: observation (x, y, vx, vy, goal_x, goal_y); reward 1 and a terminal on "
            f"the step that reaches the goal (d <= {GOAL_RADIUS}); truncations at abandoned goals and every "
            f"{info.episode_steps} steps. Evaluation: success rate on the (start, goal) cells {list(info.tasks)}."
        )
    ref_min, ref_max = ref_scores(settings)
    if progress:
        print(f"writing {len(episodes)} episodes ({int(rollout.reached.sum())} goals reached) of {dataset_id}", flush=True)
    build_root.mkdir(parents=True)
    try:
        with _minari_root(build_root), warnings.catch_warnings():
            # Minari warns that no env spec is recorded: the eval envs are offrl's
            # (`offrl.envs.pointmaze`), found through the dataset id, not through Minari.
            warnings.filterwarnings("ignore", message=".*(env_spec|eval_env).*", category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=episodes,
                observation_space=space,
                action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                algorithm_name="QIteration+PD",
                author="offrl",
                author_email="offrl@localhost",
                code_permalink="offrl/data/pointmaze.py",
                description=(
                    f"{description} Data: grid-planner waypoints followed by a PD controller with Gaussian action "
                    f"noise std {settings.noise}, wandering between random goals without resets; {settings.steps} "
                    f"steps, seed {seed}. See docs/datasets.md."
                ),
            )
            # Minari records reference scores only with an eval env; stored here so that
            # `minari.get_normalized_score` works on these datasets too.
            dataset.storage.update_metadata(
                {
                    "ref_min_score": ref_min,
                    "ref_max_score": ref_max,
                    "num_episodes_average_score": MAZE2D_REF_EPISODES,
                    "seed": seed,
                    "goals_reached": int(rollout.reached.sum()),
                    "noise": settings.noise,
                    "family": settings.family,
                }
            )
            # The episodes are still in memory: cache the flat rows now, so the first load does
            # not have to read thousands of short episodes back from HDF5.
            transitions = transitions_from_episodes(
                episodes, dataset.observation_space, dataset.action_space, dataset_id, str(build_root)
            )
            write_transitions_cache(dataset, transitions)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(build_root / dataset_id, final_path)  # atomic: the dataset appears whole
    finally:
        shutil.rmtree(build_root, ignore_errors=True)


def maze_dataset_exists(dataset_id: str) -> bool:
    canonical = resolve_maze_id(dataset_id).dataset_id
    return (get_dataset_path(canonical) / "data" / "metadata.json").exists()


@contextlib.contextmanager
def build_lock(dataset_id: str, notice: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of `dataset_id`'s builds (`<dataset dir>.lock`), waiting with a
    one-line notice if another process holds it. fcntl locks die with their process, so a
    killed build never leaves a stale lock behind."""
    path = get_dataset_path(dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if notice:
                print(f"waiting for another process that is building {dataset_id} (lock {lock_path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_maze_dataset(dataset_id: str, seed: int = 0, progress: bool = True, rebuild: bool = False) -> minari.MinariDataset:
    """Load a built-in dataset from the local store, building it first if it is not there
    (under its canonical id), or in any case with `rebuild` (a damaged one). Concurrent
    callers build it once; the others wait for it."""
    settings = resolve_maze_id(dataset_id)
    dataset_id = settings.dataset_id
    if rebuild or not maze_dataset_exists(dataset_id):
        with build_lock(dataset_id, notice=progress):
            if rebuild or not maze_dataset_exists(dataset_id):  # another process may have built it meanwhile
                if progress:
                    print(f"building {dataset_id} ({'rebuild' if rebuild else 'first use'}) into {get_dataset_path(dataset_id)}", flush=True)
                _write_dataset(settings, seed, progress)
    return open_minari_dataset(dataset_id)
