"""The shared loop for online agents: the same state, checkpoints, evaluation and logging
as `offrl.train.run`, with data collected by the agent instead of read from a dataset.

One update (what `--steps` counts for online agents) is:
  1. collect `episodes_per_update` whole episodes with the current stochastic policy, one
     per sub-env of a training vector env, with `offrl.evaluation.run_episodes` (one
     batched jitted policy call per step; a sub-env's steps after its episode ends are
     masked out);
  2. write them, in episode order and padded to a fixed size, into the shared
     `ReplayBuffer`, which therefore always holds exactly the latest batch (on-policy);
  3. one `agent.update` on the whole buffer, through the same fused update as offline
     training (`make_train_chunk` with the agent's `sample_batch`).

Environment resets are seeded from the loop RNG, which is part of `LoopState`, so a run
resumed from a checkpoint collects the same episodes as an uninterrupted one. Continuous
action spaces are rescaled to [-1, 1] and clipped there by wrappers, so agents work in
one action range and `scripts/evaluate.py` sees the same env through `DatasetSpec.env_factory`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import ClipAction, RescaleAction
from tqdm.auto import tqdm

import offrl.envs.corridor  # noqa: F401 - registers ShortCorridor-v0 with gymnasium
from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.buffer import ReplayBuffer
from offrl.envs.spec import DatasetSpec
from offrl.envs import flat_dim, make_env, make_eval_vector_env, normalized_score
from offrl.evaluation import run_episodes, summarize_episodes
from offrl.logging import RunLogger
from offrl.train import (
    Experiment,
    LoopState,
    NonFiniteLossError,
    cut_metrics,
    evaluate_seeds,
    first_nonfinite,
    kept_checkpoint,
    make_train_chunk,
    resumed_from,
    run_timing,
    stack_states,
    summary_timing,
)

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
    num_actions: int  # n for Discrete(n), 0 for Box
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
        action_dim, num_actions = 1, int(action_space.n)
    elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        action_dim, num_actions = int(action_space.shape[0]), 0
    else:
        raise cfg.ConfigError(f"env {spec.name!r} has action space {action_space}; online agents support Discrete and 1-D Box")
    if not max_steps:
        # Batches have a fixed size (episodes_per_update x the longest possible episode).
        raise cfg.ConfigError(f"env {spec.name!r} has no time limit; online collection needs one (register it with max_episode_steps)")
    return EnvInfo(observation_dim, action_dim, num_actions, int(max_steps))


def example_batch(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """One all-zero row shaped like the env's (flat) observations and stored actions."""
    info = probe_env(spec)
    return {
        "observations": np.zeros((1, info.observation_dim), np.float32),
        "actions": np.zeros((1, info.action_dim), np.float32),
    }


def build_online_experiment(config: dict[str, Any], agent_cls: type, agent_defaults: dict[str, Any]) -> Experiment:
    """The experiment of an online agent; `num_actions` comes from the env, not the user."""
    if not config.get("env"):
        raise cfg.ConfigError(f"agent {config['agent']!r} is online: give a gymnasium id with --env (e.g. CartPole-v1)")
    if config.get("dataset"):
        raise cfg.ConfigError(f"agent {config['agent']!r} is online and collects its own data; give --env instead of --dataset")
    spec = env_spec(config["env"])
    config = {**config, "num_actions": probe_env(spec).num_actions}
    return Experiment(config, agent_cls, agent_defaults, spec, transitions=None)


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


def run_online(experiment: Experiment, *, resume: bool, stop_after: int | None, progress: bool) -> dict[str, Any]:
    """`offrl.train.run` for online agents (see the module docstring); same arguments and summary."""
    config = experiment.config
    if config["normalize_observations"]:
        raise cfg.ConfigError("normalize_observations needs dataset statistics; online agents see raw observations")
    spec = experiment.spec
    run_dir = Path(config["run_dir"])
    steps = int(config["steps"])
    eval_interval = int(config["eval_interval"] or max(1, math.ceil(steps / 10)))
    checkpoint_interval = int(config["checkpoint_interval"] or eval_interval)
    num_envs = int(config["episodes_per_update"])
    env_info = probe_env(spec)
    capacity = num_envs * env_info.max_episode_steps

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(run_dir, config)
    print(f"offrl: {config['agent']} on {config['env']} ({steps} updates x {num_envs} episodes) -> {run_dir}")
    print(cfg.to_json(config))

    rows = example_batch(spec)
    state: LoopState = experiment.initial_state(rows)
    meta = ckpt.run_meta(config["agent"], config, rows, ckpt.env_record(spec))
    checkpointer = ckpt.Checkpointer(run_dir, keep=config["keep_checkpoints"], meta=meta)
    prior: dict[str, float] = {}
    if resume:
        restored = checkpointer.latest_step() or 0
        if restored:
            state = ckpt.restore(checkpointer.directory, restored, state)
            prior = resumed_from(checkpointer, restored, steps, experiment.agent_defaults)
        cut_metrics(run_dir, restored)
    logger = RunLogger(run_dir, config, resume=resume)
    train_envs = make_eval_vector_env(spec, num_envs, config["seed"])
    eval_envs = make_eval_vector_env(spec, config["eval_episodes"], config["seed"])

    def evaluate(step: int) -> dict[str, float]:
        # The offline loop's evaluation for one seed, so scripts/evaluate.py reproduces it.
        episodes = evaluate_seeds(
            eval_envs, stack_states([state]), [config["seed"]], config["eval_episodes"], config["eval_deterministic"], step
        )[0]
        return summarize_episodes(episodes, lambda returns: normalized_score(spec, returns))

    buffer = empty_buffer(env_info, capacity)
    add_rows = jax.jit(ReplayBuffer.add)
    train_step = make_train_chunk(experiment.agent_cls, 1)

    run_started = time.perf_counter()
    start_step = int(state.step)
    train_seconds, updates_done, last_eval = 0.0, 0, None
    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="upd", dynamic_ncols=True)
    try:
        for step in range(start_step + 1, steps + 1):
            started = time.perf_counter()
            rng, collect_key, seed_key = jax.random.split(state.rng, 3)
            reset_seed = int(jax.random.randint(seed_key, (), 0, np.iinfo(np.int32).max))
            agent = state.agent
            episodes = run_episodes(train_envs, lambda obs, key: agent.sample_actions(obs, key), collect_key, reset_seed)
            buffer = add_rows(buffer, episode_rows(episodes, capacity))
            new_state, stacked = train_step(state.replace(rng=rng), buffer)
            stacked = jax.device_get(stacked)
            elapsed = time.perf_counter() - started
            bad = first_nonfinite(stacked)
            if bad is not None:
                raise NonFiniteLossError(
                    f"{bad[1]} became non-finite at update {step}; stopped, "
                    f"{kept_checkpoint(checkpointer, checkpoint_interval)} (lower the learning rates)"
                )
            state = new_state
            train_seconds += elapsed
            updates_done += 1
            bar.update(1)
            metrics = {f"train/{name}": float(np.mean(values)) for name, values in stacked.items()}
            metrics.update(
                {
                    "train/updates_per_second": 1.0 / elapsed,
                    "rollout/return_mean": float(episodes["returns"].mean()),
                    "rollout/return_std": float(episodes["returns"].std()),
                    "rollout/length_mean": float(episodes["lengths"].mean()),
                    "rollout/episodes": step * num_envs,
                }
            )
            logger.log(metrics, step=step)
            if step % eval_interval == 0 or step == steps:
                last_eval = evaluate(step)
                logger.log({f"eval/{name}": value for name, value in last_eval.items()}, step=step)
                bar.set_postfix(eval_return=f"{last_eval['return_mean']:.1f}", train_return=f"{episodes['returns'].mean():.1f}")
            if step % checkpoint_interval == 0 or step == steps:
                scored = step % eval_interval == 0 or step == steps
                checkpointer.save(step, state, last_eval["return_mean"] if scored else None, run_timing(prior, train_seconds, run_started))
            if stop_after is not None and updates_done >= stop_after:
                return {}
        if last_eval is None or int(state.step) != steps:
            last_eval = evaluate(steps)
        # Collection included in the time: for an online agent an update is not done until its episodes are.
        summary = {
            **last_eval,
            "train_episodes": steps * num_envs,
            **summary_timing(steps, run_timing(prior, train_seconds, run_started)),
        }
        ckpt.write_json_atomic(run_dir / "summary.json", summary)
        logger.summary(summary)
        return summary
    finally:
        bar.close()
        checkpointer.close()
        train_envs.close()
        eval_envs.close()
        logger.close()
