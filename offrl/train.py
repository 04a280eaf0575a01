"""The training loop every offline agent shares.

The dataset lives on the device in a `ReplayBuffer`; `updates_per_call` updates (batch
sampling included) run inside one jitted `lax.scan`, so Python is touched only between
calls: to log, evaluate and checkpoint. The whole loop state (agent, RNG, step,
normalizer) is one pytree, which is what makes resume exact and checkpoints complete.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents import get_agent
from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.buffer import ReplayBuffer, observation_statistics
from offrl.data.transitions import Transitions
from offrl.evaluation import action_scatter, make_policy, run_episodes, summarize_episodes
from offrl.logging import RunLogger


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint is kept."""


@flax.struct.dataclass
class LoopState:
    agent: Any
    rng: jax.Array
    step: jax.Array
    obs_mean: jax.Array
    obs_std: jax.Array


def default_sample_batch(buffer: ReplayBuffer, key: jax.Array, config: Any) -> dict[str, jax.Array]:
    return buffer.sample(key, config["batch_size"])


def make_train_chunk(agent_cls: type, num_updates: int) -> Callable[[LoopState, ReplayBuffer], tuple[LoopState, dict]]:
    """`num_updates` fused updates: (state, buffer) -> (state, per-update info stacked)."""
    sample_batch = getattr(agent_cls, "sample_batch", default_sample_batch)

    def train_chunk(state: LoopState, buffer: ReplayBuffer) -> tuple[LoopState, dict]:
        def one_update(state: LoopState, _: None) -> tuple[LoopState, dict]:
            rng, batch_key = jax.random.split(state.rng)
            batch = sample_batch(buffer, batch_key, state.agent.config)
            agent, info = state.agent.update(batch)
            return state.replace(agent=agent, rng=rng, step=state.step + 1), info

        return jax.lax.scan(one_update, state, None, length=num_updates)

    return jax.jit(train_chunk)


def first_nonfinite(stacked_info: dict[str, np.ndarray]) -> tuple[int, str] | None:
    """(index within the chunk, metric name) of the first NaN/Inf, or None."""
    worst = None
    for name, values in stacked_info.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if len(bad) and (worst is None or bad[0] < worst[0]):
            worst = (int(bad[0]), name)
    return worst


def normalize_transitions(transitions: Transitions, mean: np.ndarray, std: np.ndarray) -> Transitions:
    return Transitions(
        **{
            **transitions.as_dict(),
            "observations": (transitions.observations - mean) / std,
            "next_observations": (transitions.next_observations - mean) / std,
        }
    )


@dataclass
class Experiment:
    """Everything a run or an evaluation needs, built from a resolved config."""

    config: dict[str, Any]
    agent_cls: type
    agent_defaults: dict[str, Any]
    spec: Any
    transitions: Transitions | None

    def initial_state(self, example_batch: dict[str, np.ndarray]) -> LoopState:
        seed = self.config["seed"]
        init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
        agent = self.agent_cls.create(cfg.agent_config(self.config, self.agent_defaults), example_batch, init_key)
        obs_dim = example_batch["observations"].shape[-1]
        state = LoopState(
            agent=agent,
            rng=loop_key,
            step=jnp.asarray(0, jnp.int32),
            obs_mean=jnp.zeros(obs_dim, jnp.float32),
            obs_std=jnp.ones(obs_dim, jnp.float32),
        )
        # Python scalars (e.g. optimizer step counters) become arrays, as they are after any update,
        # so a fresh state and a restored one have the same structure.
        return jax.tree_util.tree_map(jnp.asarray, state)


def resolve_config(argv_overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge defaults, presets, --config and command-line overrides (see offrl.config)."""
    overrides = dict(argv_overrides)
    agent_name = overrides.get("agent", cfg.RUN_DEFAULTS["agent"])
    _, agent_defaults = get_agent(agent_name)
    config = cfg.base_config(agent_defaults)
    config["agent"] = agent_name
    dataset = overrides.get("dataset") or config["dataset"]
    env = overrides.get("env")
    if dataset is None and env is None:
        dataset = cfg.DEFAULT_DATASET
    family = _data_family(dataset) if dataset is not None else str(env)
    for path in cfg.preset_paths(agent_name.split("-")[0], family):
        cfg.merge(config, cfg.load_yaml(path), str(path))
    file_path = overrides.pop("config", None)
    if file_path:
        cfg.merge(config, cfg.load_yaml(file_path), str(file_path))
    cfg.merge(config, overrides, "command line")
    config["dataset"] = dataset
    return config


def _data_family(dataset: str) -> str:
    from offrl.data import dataset_family

    return dataset_family(dataset)


def build_experiment(config: dict[str, Any], load_data: bool = True) -> Experiment:
    from offrl.data import load_dataset

    agent_cls, agent_defaults = get_agent(config["agent"])
    if getattr(agent_cls, "online", False):
        from offrl.online import build_online_experiment

        return build_online_experiment(config, agent_cls, agent_defaults)
    transitions, spec = load_dataset(config["dataset"], env_id=config.get("env")) if load_data else (None, None)
    return Experiment(config, agent_cls, agent_defaults, spec, transitions)


def default_run_dir(config: dict[str, Any]) -> Path:
    slug = str(config["dataset"] or config["env"]).replace("/", "_").replace(".hdf5", "")
    return Path("runs") / config["agent"] / slug / f"s{config['seed']}-{time.strftime('%Y%m%d-%H%M%S')}"


def boundaries(total: int, *intervals: int) -> list[int]:
    """Sorted steps at which the loop must return to Python (every interval and the end)."""
    points = {total}
    for interval in intervals:
        points.update(range(interval, total, interval))
    return sorted(points)


def run(config: dict[str, Any], *, stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate, log and checkpoint one run; returns the final evaluation summary.

    `stop_after` ends this process's work after that many updates, as a kill would (no
    final evaluation, no summary), so preemption and `--resume` can be tested exactly.
    """
    resume_dir = config.get("resume")
    if resume_dir:
        saved = ckpt.load_config(Path(resume_dir))
        config = {**saved, "resume": str(resume_dir), "run_dir": str(resume_dir)}
    run_dir = Path(config["run_dir"] or default_run_dir(config))
    config["run_dir"] = str(run_dir)
    experiment = build_experiment(config)
    if getattr(experiment.agent_cls, "online", False):
        from offrl.online import run_online

        return run_online(experiment, resume=bool(resume_dir), stop_after=stop_after, progress=progress)
    transitions, spec = experiment.transitions, experiment.spec
    steps = int(config["steps"])
    eval_interval = int(config["eval_interval"] or max(1, math.ceil(steps / 10)))
    checkpoint_interval = int(config["checkpoint_interval"] or eval_interval)
    updates_per_call = int(config["updates_per_call"])

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(run_dir, config)
    print(f"offrl: {config['agent']} on {config['dataset']} ({len(transitions)} transitions) -> {run_dir}")
    print(cfg.to_json(config))

    if config["normalize_observations"]:
        obs_mean, obs_std = observation_statistics(transitions.observations)
        transitions = normalize_transitions(transitions, obs_mean, obs_std)
    buffer = ReplayBuffer.from_transitions(transitions)
    example_rows = np.random.default_rng(config["seed"]).choice(
        len(transitions), size=min(len(transitions), config["example_batch_size"]), replace=False
    )
    state = experiment.initial_state(transitions[np.sort(example_rows)].as_dict())
    if config["normalize_observations"]:
        state = state.replace(obs_mean=jnp.asarray(obs_mean), obs_std=jnp.asarray(obs_std))

    checkpointer = ckpt.Checkpointer(run_dir, keep=config["keep_checkpoints"])
    if resume_dir and checkpointer.latest_step() is not None:
        state = ckpt.restore(checkpointer.latest.directory, checkpointer.latest_step(), state)
        print(f"offrl: resumed from step {int(state.step)}")
    logger = RunLogger(run_dir, config, resume=bool(resume_dir))
    from offrl.envs import make_eval_vector_env, normalized_score

    eval_envs = make_eval_vector_env(spec, config["eval_episodes"], config["seed"])
    dataset_actions = transitions.actions[np.random.default_rng(0).choice(len(transitions), 2000)]

    def evaluate(step: int) -> dict[str, float]:
        policy = make_policy(state.agent, state.obs_mean, state.obs_std, config["eval_deterministic"])
        key = jax.random.fold_in(jax.random.PRNGKey(config["seed"] + 1), step)
        episodes = run_episodes(eval_envs, policy, key, seed=config["seed"] + 10_000)
        metrics = summarize_episodes(episodes, lambda returns: normalized_score(spec, returns))
        if transitions.action_dim == 2:
            figure = action_scatter(dataset_actions, episodes["actions"][:2000], f"{config['agent']} step {step}")
            logger.log_figure("eval/actions", figure, step)
        return metrics

    chunks: dict[int, Callable] = {}
    run_started = time.perf_counter()
    start_step = int(state.step)
    train_seconds, updates_done, last_eval = 0.0, 0, None
    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="upd", dynamic_ncols=True)
    try:
        for boundary in boundaries(steps, updates_per_call, eval_interval, checkpoint_interval):
            step = int(state.step)
            if boundary <= step:
                continue
            length = boundary - step
            if length not in chunks:
                chunks[length] = make_train_chunk(experiment.agent_cls, length)
            started = time.perf_counter()
            new_state, stacked = chunks[length](state, buffer)
            stacked = jax.device_get(stacked)
            elapsed = time.perf_counter() - started
            bad = first_nonfinite(stacked)
            if bad is not None:
                raise NonFiniteLossError(
                    f"{bad[1]} became non-finite at update {step + bad[0] + 1}; stopped, the last good checkpoint "
                    f"in {checkpointer.directory} is kept (lower the learning rates or check the data)"
                )
            state = new_state
            train_seconds += elapsed
            updates_done += length
            bar.update(length)
            metrics = {f"train/{name}": float(np.mean(values)) for name, values in stacked.items()}
            metrics["train/updates_per_second"] = length / elapsed
            logger.log(metrics, step=boundary)
            if boundary % eval_interval == 0 or boundary == steps:
                last_eval = evaluate(boundary)
                logger.log({f"eval/{name}": value for name, value in last_eval.items()}, step=boundary)
                score = last_eval.get("normalized_score", last_eval["return_mean"])
                bar.set_postfix(score=f"{score:.1f}", ups=f"{length / elapsed:.0f}")
            if boundary % checkpoint_interval == 0 or boundary == steps:
                score = None if last_eval is None else last_eval.get("normalized_score", last_eval["return_mean"])
                checkpointer.save(boundary, state, score if boundary % eval_interval == 0 or boundary == steps else None)
            if stop_after is not None and updates_done >= stop_after:
                return {}
        if last_eval is None or int(state.step) != steps:
            last_eval = evaluate(steps)
        summary = {
            **last_eval,
            "steps": steps,
            "updates_per_second": updates_done / train_seconds if train_seconds else None,
            "wall_seconds": time.perf_counter() - run_started,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.summary(summary)
        return summary
    finally:
        bar.close()
        checkpointer.close()
        eval_envs.close()
        logger.close()


def restore_run(path: str | Path, which: str = "latest") -> tuple[LoopState, Experiment, int]:
    """The saved loop state of a run directory or checkpoint, on this machine's device."""
    manager_dir, step = ckpt.find_checkpoint(path, which)
    config = ckpt.load_config(ckpt.run_dir_of(manager_dir))
    experiment = build_experiment(config)
    if getattr(experiment.agent_cls, "online", False):  # no dataset: rows shaped like the env's
        from offrl.online import example_batch

        rows = example_batch(experiment.spec)
    else:
        rows = experiment.transitions[: max(256, int(config.get("num_tokens", 0)))].as_dict()
    abstract_state = jax.eval_shape(lambda: experiment.initial_state(rows))
    return ckpt.restore(manager_dir, step, abstract_state), experiment, step
