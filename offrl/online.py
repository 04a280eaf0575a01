"""The online agents' data source: episodes collected from a vector env between updates.
`offrl.runner.run` trains, evaluates, logs, checkpoints and resumes an online run as any
other; only the data comes from here (`EpisodeSource`) instead of a dataset.

One update (what `--steps` counts for online agents) is:
  1. collect `episodes_per_update` whole episodes with the current stochastic policy, one
     per sub-env of a training vector env, with `offrl.evaluation.run_episodes` (one
     batched jitted policy call per step; a sub-env's steps after its episode ends are
     masked out);
  2. write them, in episode order and padded to a fixed size, into the shared
     `ReplayBuffer`, which therefore always holds exactly the latest batch (on-policy);
  3. one `agent.update` on the whole buffer, through the same fused update as offline
     training (`offrl.loop.make_train_chunk` with the agent's `sample_batch`).

Environment resets are seeded from the loop RNG, which is part of `LoopState`, so a run
resumed from a checkpoint collects the same episodes as an uninterrupted one. Continuous
action spaces are rescaled to [-1, 1] and clipped there by wrappers, so agents work in
one action range and `scripts/evaluate.py` sees the same env through `DatasetSpec.env_factory`.

`--num-seeds K` gives each seed its own training vector env (seeded as the single run with
that seed) and its own buffer, and steps the seeds one after the other through the same
collection and update as a single run, so each seed of a K-seed run is exactly the run with
that seed (tested). What K seeds in one process save is the start-up and compilation; the
episodes are collected on the host either way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import ClipAction, RescaleAction

import offrl.envs.corridor  # noqa: F401 - registers ShortCorridor-v0 with gymnasium
from offrl import config as cfg
from offrl.buffer import ReplayBuffer
from offrl.envs import flat_dim, make_env, make_eval_vector_env
from offrl.envs.spec import DatasetSpec
from offrl.evaluation import run_episodes
from offrl.loop import LoopState, make_train_chunk, seed_slice, stack_states

# The buffer columns an online batch fills; `masks` marks the real rows among the padding.
COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")


def make_online_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`make_env`, with Box actions rescaled to [-1, 1] and clipped there."""
    env = make_env(env_id, **kwargs)
    if isinstance(env.action_space, spaces.Box):
        env = ClipAction(RescaleAction(env, -1.0, 1.0))
    return env


@dataclass(frozen=True)
class EnvInfo:
    observation_dim: int
    action_dim: int
    max_episode_steps: int


def env_spec(env_id: str) -> DatasetSpec:
    """A dataset-less spec: how to build the env, and no reference scores."""
    return DatasetSpec(
        name=env_id,
        family="online",
        env_factory=functools.partial(make_online_env, env_id),
        ref_min_score=None,
        ref_max_score=None,
        goal_conditioned=False,
    )


def probe_env(spec: DatasetSpec) -> EnvInfo:
    env = spec.env_factory()
    try:
        action_space, max_steps = env.action_space, env.spec.max_episode_steps if env.spec else None
        observation_dim = flat_dim(env.observation_space)
    finally:
        env.close()
    if isinstance(action_space, spaces.Discrete):
        action_dim = 1
    elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        action_dim = int(action_space.shape[0])
    else:
        raise cfg.ConfigError(f"env {spec.name!r} has action space {action_space}; online agents support Discrete and 1-D Box")
    if not max_steps:
        # Batches have a fixed size (episodes_per_update x the longest possible episode).
        raise cfg.ConfigError(f"env {spec.name!r} has no time limit; online collection needs one (register it with max_episode_steps)")
    return EnvInfo(observation_dim, action_dim, int(max_steps))


def example_batch(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """One all-zero row shaped like the env's (flat) observations and stored actions."""
    info = probe_env(spec)
    return {
        "observations": np.zeros((1, info.observation_dim), np.float32),
        "actions": np.zeros((1, info.action_dim), np.float32),
    }


def online_spec(config: dict[str, Any]) -> DatasetSpec:
    """The env an online agent's config names."""
    if not config.get("env"):
        raise cfg.ConfigError(f"agent {config['agent']!r} is online: give a gymnasium id with --env (e.g. CartPole-v1)")
    if config.get("dataset"):
        raise cfg.ConfigError(f"agent {config['agent']!r} is online and collects its own data; give --env instead of --dataset")
    return env_spec(config["env"])


def episode_rows(episodes: dict[str, np.ndarray], capacity: int) -> dict[str, np.ndarray]:
    """`run_episodes` transitions in episode order, padded to `capacity` rows.

    Each padding row is an episode of its own (episode_end 1, reward 0, mask 0), so no
    return flows into or out of it.
    """
    order = np.argsort(episodes["env_ids"], kind="stable")
    n = len(order)
    rows = {}
    for name in COLUMNS:
        values = np.asarray(episodes[name], np.float32)[order]
        values = values.reshape(n, -1) if name not in ("rewards", "terminals", "episode_ends") else values
        rows[name] = np.zeros((capacity, *values.shape[1:]), np.float32)
        rows[name][:n] = values
    rows["episode_ends"][n:] = 1.0
    rows["masks"] = (np.arange(capacity) < n).astype(np.float32)
    return rows


def empty_buffer(env_info: EnvInfo, capacity: int) -> ReplayBuffer:
    row = {name: np.zeros((), np.float32) for name in (*COLUMNS, "masks")}
    row["observations"] = row["next_observations"] = np.zeros(env_info.observation_dim, np.float32)
    row["actions"] = np.zeros(env_info.action_dim, np.float32)
    return ReplayBuffer.create(row, capacity)


class EpisodeSource:
    """Episodes collected with the current policy before every update (see the module
    docstring): an `offrl.sources.DataSource` whose updates are those of the unbatched agent,
    one seed after the other."""

    updates_per_call = 1  # each update needs fresh episodes, so the loop returns to Python for each
    reference_actions = None

    def __init__(self, config: dict[str, Any], spec: DatasetSpec, agent_cls: type) -> None:
        if config["normalize_observations"]:
            raise cfg.ConfigError("normalize_observations needs dataset statistics; online agents see raw observations")
        self.num_envs = int(config["episodes_per_update"])
        env_info = probe_env(spec)
        self.capacity = self.num_envs * env_info.max_episode_steps
        self.example_batch = example_batch(spec)
        self.description = f"on {config['env']} ({config['steps']} updates x {self.num_envs} episodes)"
        seeds = [int(config["seed"]) + index for index in range(int(config["num_seeds"]))]
        self.buffers = [empty_buffer(env_info, self.capacity) for _ in seeds]
        self.add_rows = jax.jit(ReplayBuffer.add)
        self.update = make_train_chunk(agent_cls, 1)
        self.envs = [make_eval_vector_env(spec, self.num_envs, seed) for seed in seeds]

    def prepare(self, state: LoopState) -> LoopState:
        return state

    def train(self, state: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], list[dict[str, float]]]:
        singles, infos, rollouts = [], [], []
        for index in range(len(self.envs)):
            single, info, rollout = self.train_seed(index, seed_slice(state, index), length)
            singles.append(single)
            infos.append(info)
            rollouts.append(rollout)
        info = {name: jnp.stack([one[name] for one in infos]) for name in infos[0]}
        return stack_states(singles), info, rollouts

    def train_seed(self, index: int, single: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], dict[str, float]]:
        """`length` updates of seed `index`, each on episodes freshly collected from its envs."""
        infos, returns, lengths = [], [], []
        for _ in range(length):
            # Env resets are seeded from the loop RNG: a resumed run collects the same episodes.
            rng, collect_key, seed_key = jax.random.split(single.rng, 3)
            reset_seed = int(jax.random.randint(seed_key, (), 0, np.iinfo(np.int32).max))
            agent = single.agent
            episodes = run_episodes(self.envs[index], lambda obs, key: agent.sample_actions(obs, key), collect_key, reset_seed)
            self.buffers[index] = self.add_rows(self.buffers[index], episode_rows(episodes, self.capacity))
            single, info = self.update(single.replace(rng=rng), self.buffers[index])
            infos.append(info)
            returns.append(episodes["returns"])
            lengths.append(episodes["lengths"])
        rollout = {
            "rollout/return_mean": float(np.concatenate(returns).mean()),
            "rollout/return_std": float(np.concatenate(returns).std()),
            "rollout/length_mean": float(np.concatenate(lengths).mean()),
            "rollout/episodes": int(single.step) * self.num_envs,
        }
        return single, {name: jnp.concatenate([one[name] for one in infos]) for name in infos[0]}, rollout

    def summary(self, steps: int) -> dict[str, Any]:
        return {"train_episodes": steps * self.num_envs}

    def close(self) -> None:
        for envs in self.envs:
            envs.close()
