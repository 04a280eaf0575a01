"""Built-in pointmaze datasets, generated locally the way D4RL maze2d / Minari pointmaze were.

A point mass moves through a gymnasium-robotics PointMaze that never resets: the task is
continuing and, whenever the goal is reached, the env draws a new random goal cell (with
position noise) and the ball carries on from where it is. A grid planner (value
iteration on the maze's cells) turns each new goal into a path of waypoints (cell
centres, the goal itself last) and a PD controller,
`action = 10 * (waypoint - position) - 1 * velocity`, follows it; Gaussian noise
(std 0.5 by default) is added to every action before clipping to [-1, 1], which is what
gives the data its action coverage.

Episodes. As in Minari's `D4RL/pointmaze` datasets an episode ends when its goal is
reached; as in D4RL's maze2d generation it also ends when the goal has not been reached
within the maze's D4RL episode length (300 / 600 / 800 steps), and a new goal is drawn.
Both ends are stored as `truncations` (nothing terminates; the ball is never reset), so
every episode pursues one goal and its `desired_goal` is constant, including in its first
and last observation. (Minari's collector starts each episode from the previous one's
last observation, whose desired_goal is still the old goal; here the first observation
of an episode carries the goal the agent is actually pursuing.)

Rewards are sparse (1 within 0.45 of the desired goal). Data ids and settings:
`offrl/pointmaze/umaze-v0` is the default (noise 0.5, 1M steps; medium 2M, large 4M);
other settings get their own id, e.g. `offrl/pointmaze/umaze-noise1p0-v0` or
`offrl/pointmaze/umaze-noise0p25-steps5000-v0` (Minari ids allow no '.', so the noise's
decimal point is written 'p'; `noise1.0` is accepted too and names the same dataset).
An id is stored under its canonical form, so `umaze-noise0.5-v0` is `umaze-v0`. The same
id and seed give byte-identical arrays.

Reference scores (`ref_min_score`, `ref_max_score` in the metadata, so
`minari.get_normalized_score` works) are the mean returns over 100 episodes of the
evaluation task (see `offrl.envs.pointmaze`) of a uniform random policy and of the
noiseless planner + controller; the evaluation env's spec is stored as `eval_env`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from tqdm import tqdm

from offrl.data.minari_loader import transitions_from_episodes, write_transitions_cache
from offrl.envs.pointmaze import EVAL_TASKS, make_pointmaze_env
from offrl.envs.robotics import gymnasium_robotics

Maze = gymnasium_robotics.envs.maze.maze_v4.Maze

NAMESPACE = "offrl/pointmaze"
DEFAULT_NOISE = 0.5
GOAL_RADIUS = 0.45  # gymnasium-robotics' success distance
EVAL_EPISODES = 100
P_GAIN = 10.0
D_GAIN = 1.0
WAYPOINT_THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class MazeInfo:
    env_id: str
    default_steps: int
    eval_episode_steps: int


MAZES: dict[str, MazeInfo] = {
    "umaze": MazeInfo(EVAL_TASKS["umaze"].env_id, 1_000_000, EVAL_TASKS["umaze"].episode_steps),
    "medium": MazeInfo(EVAL_TASKS["medium"].env_id, 2_000_000, EVAL_TASKS["medium"].episode_steps),
    "large": MazeInfo(EVAL_TASKS["large"].env_id, 4_000_000, EVAL_TASKS["large"].episode_steps),
}


@dataclasses.dataclass(frozen=True)
class PointMazeSettings:
    maze: str
    noise: float
    steps: int

    @property
    def dataset_id(self) -> str:
        return pointmaze_dataset_id(self.maze, self.noise, self.steps)


def _format_noise(noise: float) -> str:
    text = f"{noise:.6f}".rstrip("0")
    return (text + "0" if text.endswith(".") else text).replace(".", "p")


def pointmaze_dataset_id(maze: str, noise: float = DEFAULT_NOISE, steps: int | None = None) -> str:
    """The canonical id: default settings are left out, so the defaults are `{maze}-v0`."""
    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}; valid mazes: {sorted(MAZES)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    name = maze
    if _format_noise(noise) != _format_noise(DEFAULT_NOISE):
        name += f"-noise{_format_noise(noise)}"
    if steps is not None and steps != MAZES[maze].default_steps:
        name += f"-steps{steps}"
    return f"{NAMESPACE}/{name}-v0"


_ID_PATTERN = re.compile(
    rf"^{re.escape(NAMESPACE)}/(?P<maze>{'|'.join(MAZES)})"
    r"(?:-noise(?P<noise>\d+(?:[.p]\d+)?))?(?:-steps(?P<steps>\d+))?-v0$"
)


def parse_pointmaze_id(dataset_id: str) -> PointMazeSettings | None:
    """The settings an id asks for, or None when it is not a pointmaze id."""
    match = _ID_PATTERN.match(dataset_id)
    if match is None:
        return None
    maze = match["maze"]
    noise = float(match["noise"].replace("p", ".")) if match["noise"] is not None else DEFAULT_NOISE
    steps = int(match["steps"]) if match["steps"] is not None else MAZES[maze].default_steps
    if steps < 1:
        return None
    return PointMazeSettings(maze=maze, noise=noise, steps=steps)


def resolve_pointmaze_id(dataset_id: str) -> PointMazeSettings:
    """Like `parse_pointmaze_id`, but an unknown id is an error naming the valid ones."""
    settings = parse_pointmaze_id(dataset_id)
    if settings is None:
        valid = ", ".join(pointmaze_dataset_id(maze) for maze in MAZES)
        raise ValueError(
            f"unknown pointmaze dataset {dataset_id!r}. Built-in datasets: {valid}; "
            f"other settings as e.g. {NAMESPACE}/umaze-noise1p0-v0 or {NAMESPACE}/umaze-noise0p25-steps5000-v0"
        )
    return settings


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

    When the desired goal changes it plans from the ball's cell; it then steers to the
    centre of the next cell on the path, moves on once within `WAYPOINT_THRESHOLD` of it,
    and steers at the exact goal position on the goal's own cell.
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
        """The noiseless, unclipped PD action; `observation` is (x, y, vx, vy)."""
        x, y, vx, vy = float(observation[0]), float(observation[1]), float(observation[2]), float(observation[3])
        gx, gy = float(goal[0]), float(goal[1])
        if (gx, gy) != self.goal:
            self.goal = (gx, gy)
            self.goal_cell = self.cell_of(gx, gy)
            self._aim_at(self.planner.next_cell(self.cell_of(x, y), self.goal_cell))
        elif self.target_cell != self.goal_cell and math.hypot(self.target[0] - x, self.target[1] - y) <= WAYPOINT_THRESHOLD:
            self._aim_at(self.planner.next_cell(self.target_cell, self.goal_cell))
        return (P_GAIN * (self.target[0] - x) - D_GAIN * vx, P_GAIN * (self.target[1] - y) - D_GAIN * vy)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """A gymnasium policy on dict observations: the clipped noiseless action."""
        return np.clip(np.asarray(self.action(obs["observation"], obs["desired_goal"]), np.float32), -1.0, 1.0)


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
    rewards: np.ndarray  # (steps,)
    episode_ends: np.ndarray  # (steps,) bool: last step of an episode (goal reached or time limit)
    goals_reached: int

    def episodes(self) -> list[EpisodeBuffer]:
        """Minari episode buffers; each episode's last observation keeps the episode's goal."""
        ends = np.flatnonzero(self.episode_ends)
        if len(ends) == 0 or ends[-1] != len(self.actions) - 1:
            ends = np.append(ends, len(self.actions) - 1)
        buffers = []
        start = 0
        for episode_id, end in enumerate(ends.tolist()):
            states = slice(start, end + 2)
            desired_goal = self.desired_goal[states].copy()
            desired_goal[-1] = desired_goal[-2]
            length = end + 1 - start
            truncations = np.zeros(length, dtype=bool)
            truncations[-1] = True
            buffers.append(
                EpisodeBuffer(
                    id=episode_id,
                    observations={
                        "achieved_goal": self.observation[states, :2].copy(),
                        "desired_goal": desired_goal,
                        "observation": self.observation[states].copy(),
                    },
                    actions=self.actions[start : end + 1],
                    rewards=self.rewards[start : end + 1],
                    terminations=np.zeros(length, dtype=bool),
                    truncations=truncations,
                    infos={},
                )
            )
            start = end + 1
        return buffers


def collect_rollout(settings: PointMazeSettings, seed: int = 0, progress: bool = False) -> Rollout:
    """Drive the noisy controller through the continuing maze for `settings.steps` steps.

    Steps the unwrapped env (the registered wrappers only add checks and a time limit we
    apply ourselves), and draws action noise from a generator seeded apart from the env's
    own goal/reset randomness, so one seed fixes every array.
    """
    info = MAZES[settings.maze]
    env = make_pointmaze_env(settings.maze, eval=False).unwrapped
    controller = controller_for(env)
    noise_rng = np.random.default_rng(seed)
    steps = settings.steps
    observation = np.empty((steps + 1, 4))
    desired_goal = np.empty((steps + 1, 2))
    actions = np.empty((steps, 2), dtype=np.float32)
    rewards = np.empty(steps)
    episode_ends = np.zeros(steps, dtype=bool)
    goals_reached = 0

    obs, _ = env.reset(seed=seed)
    observation[0] = obs["observation"]
    desired_goal[0] = env.goal
    episode_length = 0
    chunk = 10_000
    bar = tqdm(total=steps, desc=f"collecting {settings.dataset_id}", unit="step", disable=not progress, mininterval=1.0)
    for chunk_start in range(0, steps, chunk):
        chunk_steps = min(chunk, steps - chunk_start)
        noise = settings.noise * noise_rng.standard_normal((chunk_steps, 2))
        for k in range(chunk_steps):
            t = chunk_start + k
            ax, ay = controller.action(observation[t], desired_goal[t])
            action = np.clip(np.array((ax + noise[k, 0], ay + noise[k, 1]), dtype=np.float32), -1.0, 1.0)
            obs, reward, _, _, step_info = env.step(action)
            actions[t] = action
            rewards[t] = reward
            observation[t + 1] = obs["observation"]
            episode_length += 1
            if step_info["success"]:
                goals_reached += 1
                episode_ends[t] = True  # the env has already drawn the next goal
            elif episode_length >= info.eval_episode_steps:
                episode_ends[t] = True
                _draw_new_goal(env, obs["achieved_goal"])
            if episode_ends[t]:
                episode_length = 0
            desired_goal[t + 1] = env.goal
        bar.update(chunk_steps)
    bar.close()
    env.close()
    return Rollout(observation, desired_goal, actions, rewards, episode_ends, goals_reached)


def evaluate_policy(maze: str, policy: str, episodes: int = EVAL_EPISODES, seed: int = 0) -> np.ndarray:
    """Returns of `policy` ("random" or "controller") over episodes of the evaluation task.

    Steps the unwrapped evaluation env for its D4RL episode length, which is what the
    registered TimeLimit would do, at a fraction of the wrapper overhead.
    """
    env = make_pointmaze_env(maze, eval=True)
    length = env.spec.max_episode_steps
    env = env.unwrapped
    controller = controller_for(env)
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, _ = env.reset()
        controller.reset()
        for _ in range(length):
            if policy == "random":
                action = rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
            else:
                action = controller(obs)
            obs, reward, _, _, _ = env.step(action)
            returns[episode] += reward
    env.close()
    return returns


def build_pointmaze_dataset(dataset_id: str, seed: int = 0, progress: bool = True) -> minari.MinariDataset:
    """Generate the dataset an id names and write it to the local Minari store (under its canonical id)."""
    settings = resolve_pointmaze_id(dataset_id)
    dataset_id = settings.dataset_id
    path = get_dataset_path(dataset_id)
    if path.exists():
        if pointmaze_dataset_exists(dataset_id):
            raise FileExistsError(f"{dataset_id} already exists at {path}")
        # A build killed before Minari wrote its metadata leaves a directory that cannot be
        # loaded; the data is ours to regenerate (same id and seed, same arrays).
        raise FileExistsError(
            f"{path} holds an incomplete build of {dataset_id} (no data/metadata.json, e.g. the build was killed); "
            "delete that directory and run again to rebuild it"
        )
    rollout = collect_rollout(settings, seed=seed, progress=progress)
    random_return = float(evaluate_policy(settings.maze, "random", seed=seed).mean())
    controller_return = float(evaluate_policy(settings.maze, "controller", seed=seed).mean())
    collection_env = make_pointmaze_env(settings.maze, eval=False)
    eval_env = make_pointmaze_env(settings.maze, eval=True)
    episodes = rollout.episodes()
    if progress:
        print(f"writing {len(episodes)} episodes ({rollout.goals_reached} goals reached) to {get_dataset_path(dataset_id)}")
    try:
        dataset = minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=episodes,
            env=collection_env,
            eval_env=eval_env.spec,
            algorithm_name="QIteration+PD",
            author="offrl",
            author_email="offrl@localhost",
            code_permalink="offrl/data/pointmaze.py",
            ref_min_score=random_return,
            ref_max_score=controller_return,
            num_episodes_average_score=EVAL_EPISODES,
            description=(
                f"{settings.maze} PointMaze ({MAZES[settings.maze].env_id}), continuing with a new random goal "
                f"whenever one is reached; grid-planner waypoints followed by a PD controller with Gaussian "
                f"action noise std {settings.noise}; {settings.steps} steps, seed {seed}. Episodes end (truncation) "
                f"at each reached goal or after {MAZES[settings.maze].eval_episode_steps} steps without it. "
                f"Reference scores: mean returns of a uniform random policy and of the noiseless controller "
                f"over {EVAL_EPISODES} episodes of the fixed-goal evaluation env."
            ),
        )
    except BaseException:
        shutil.rmtree(get_dataset_path(dataset_id), ignore_errors=True)
        raise
    finally:
        collection_env.close()
        eval_env.close()
    dataset.storage.update_metadata({"seed": seed, "goals_reached": rollout.goals_reached, "noise": settings.noise})
    # The episodes are still in memory: cache the flat rows now, so the first load does not
    # have to read thousands of short episodes back from HDF5.
    transitions = transitions_from_episodes(
        episodes, dataset.observation_space, dataset.action_space, dataset_id, str(get_dataset_path(dataset_id))
    )
    write_transitions_cache(dataset, transitions)
    return dataset


def pointmaze_dataset_exists(dataset_id: str) -> bool:
    canonical = resolve_pointmaze_id(dataset_id).dataset_id
    return (get_dataset_path(canonical) / "data" / "metadata.json").exists()


def ensure_pointmaze_dataset(dataset_id: str) -> minari.MinariDataset:
    """Load the dataset from the local store, building it on first use."""
    dataset_id = resolve_pointmaze_id(dataset_id).dataset_id
    if pointmaze_dataset_exists(dataset_id):
        return minari.load_dataset(dataset_id)
    print(f"building {dataset_id} (first use) into {get_dataset_path(dataset_id)}")
    return build_pointmaze_dataset(dataset_id)
