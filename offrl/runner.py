"""The one runner: `run(experiment)` carries out a resolved `offrl.experiment.Experiment`,
top to bottom: load the data and build its source, create every member's agent, loop
{ fused chunk of updates -> evaluate -> log -> checkpoint }, write the summaries. Nothing
here resolves or checks config: `offrl.experiment.resolve` did, once.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.envs import d4rl_normalized_score, make_eval_vector_env, normalized_score
from offrl.evaluation import action_scatter, evaluate_seeds, summarize_episodes
from offrl.experiment import Experiment, load_data
from offrl.logging import RunLogger
from offrl.loop import LoopState, seed_slice, shard_seeds, stack_states, with_config_hyperparameters
from offrl.members import Member, score_of, write_member_configs, write_summaries
from offrl.sources import DataSource, data_source
from offrl.transitions import Transitions


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint, if any, is kept."""


def run(
    experiment: Experiment, *, stop_after: int | None = None, progress: bool = True, transitions: Transitions | None = None
) -> dict[str, Any]:
    """Train, evaluate, log and checkpoint one resolved experiment; returns the final summary.

    `stop_after` ends this process's work after that many updates, as a kill would (no
    final evaluation, no summary), so preemption and `--resume` can be tested exactly.
    `transitions` trains on these rows instead of the named dataset's (e.g. its rows with
    relabeled rewards); the dataset still gives the evaluation env and scores. They are
    not saved: a resumed run must be given them again.
    """
    experiment = load_data(experiment)
    config, members, resume = experiment.config, experiment.members, bool(experiment.config.get("resume"))
    steps = int(config["steps"])
    eval_interval = int(config["eval_interval"] or max(1, math.ceil(steps / 10)))
    checkpoint_interval = int(config["checkpoint_interval"] or eval_interval)
    with contextlib.ExitStack() as stack:
        def closed_at_exit(resource: Any) -> Any:
            return stack.enter_context(contextlib.closing(resource))

        source = closed_at_exit(data_source(experiment, transitions))
        states = [source.prepare(experiment.initial_state(source.example_batch, m.seed, m.config)) for m in members]
        stack.enter_context(ckpt.run_dir_lock(Path(config["run_dir"])))  # the first write; held until the run ends
        start_run_dir(experiment, source)
        # Before the checkpoint managers open: a resume removes the steps after the one it restores.
        states, prior = restored_states(states, experiment) if resume else (states, {})
        env = ckpt.env_record(experiment.spec)
        checkpointers = [
            closed_at_exit(ckpt.Checkpointer(m.directory, config["keep_checkpoints"],
                                             ckpt.run_meta(config["agent"], dict(m.config), source.example_batch, env)))
            for m in members
        ]
        state = shard_seeds(stack_states(states))
        loggers = [closed_at_exit(RunLogger(m.directory, dict(m.config), resume=resume, concurrent=len(members) > 1))
                   for m in members]
        evaluate = closed_at_exit(Evaluation(experiment, loggers, source.reference_actions))
        bar = closed_at_exit(tqdm(total=steps, initial=int(state.step[0]), disable=not progress, unit="upd", dynamic_ncols=True))
        clock, last_eval = Clock(prior), None
        for boundary in boundaries(steps, source.updates_per_call, eval_interval, checkpoint_interval):
            step = int(state.step[0])
            if boundary <= step:
                continue
            started = time.perf_counter()
            new_state, info, extra = source.train(state, boundary - step)
            info = jax.device_get(info)
            elapsed = time.perf_counter() - started
            check_finite(info, step, members, checkpointers, checkpoint_interval)
            state = new_state
            clock.trained(boundary - step, elapsed)
            bar.update(boundary - step)
            for index, logger in enumerate(loggers):
                metrics = {f"train/{name}": float(np.mean(values[index])) for name, values in info.items()}
                logger.log({**metrics, "train/updates_per_second": (boundary - step) / elapsed, **extra[index]}, step=boundary)
            evaluated = boundary % eval_interval == 0 or boundary == steps
            if evaluated:
                last_eval = evaluate(state, boundary)
                for logger, result in zip(loggers, last_eval):
                    logger.log({f"eval/{name}": value for name, value in result.items()}, step=boundary)
                bar.set_postfix(score=f"{np.mean([score_of(r) for r in last_eval]):.1f}", ups=f"{(boundary - step) / elapsed:.0f}")
            if boundary % checkpoint_interval == 0 or boundary == steps:
                for index, checkpointer in enumerate(checkpointers):
                    checkpointer.save(boundary, seed_slice(state, index), score_of(last_eval[index]) if evaluated else None, clock.timing())
            if stop_after is not None and clock.updates >= stop_after:
                return {}
        if last_eval is None or int(state.step[0]) != steps:
            last_eval = evaluate(state, steps)
        timing = clock.timing()
        ups = steps / timing["train_seconds"] if timing["train_seconds"] else None
        extra = {"steps": steps, "updates_per_second": ups, "wall_seconds": timing["wall_seconds"], **source.summary(steps)}
        return write_summaries(config, members, loggers, last_eval, extra, experiment.grid)


def start_run_dir(experiment: Experiment, source: DataSource) -> None:
    """The run directory with its config.json, the run's first lines, and its members' directories."""
    config, grid = experiment.config, experiment.grid
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(run_dir, dict(config))
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    combinations = len(experiment.members) // len(seeds)
    print(f"offrl: {config['agent']} {source.description}, seeds {seeds}"
          f"{f', {combinations} combinations of {list(grid)}' if grid else ''} -> {run_dir}")
    print(cfg.to_json(dict(config)))
    write_member_configs(experiment.members)


def boundaries(total: int, *intervals: int) -> list[int]:
    """Sorted steps at which the loop must return to Python (every interval and the end)."""
    points = {total}
    for interval in intervals:
        points.update(range(interval, total, interval))
    return sorted(points)


def restored_states(states: list[LoopState], experiment: Experiment) -> tuple[list[LoopState], dict[str, float]]:
    """Each member's state at the newest step every member saved intact (members save together;
    a kill between two saves leaves the older step in every one; `ckpt.resume_step`), with the
    hyperparameters of the config (`with_config_hyperparameters`), metrics.jsonl cut back to
    it, and the run's time until then."""
    directories = [member.directory / "checkpoints" for member in experiment.members]
    restored = ckpt.resume_step(directories)
    prior: dict[str, float] = {}
    if restored:
        states = [with_config_hyperparameters(ckpt.restore(d, restored, s), s) for d, s in zip(directories, states)]
        prior = resumed_from(directories[0], restored, experiment)
    for member in experiment.members:
        cut_metrics(member.directory, restored)
    return states, prior


def resumed_from(manager_dir: Path, step: int, experiment: Experiment) -> dict[str, float]:
    """Say what a resume from `step` to `config["steps"]` updates changes (the steps, and any
    derived agent key they change), and return the run's time up to `step` as its checkpoint
    recorded it."""
    config = experiment.config
    meta = ckpt.read_meta(manager_dir, step)
    steps, before = int(config["steps"]), int(meta["config"]["steps"])
    print(f"offrl: resumed from step {step}" + (f", now training to step {steps} (was {before})" if steps != before else ""))
    for key, value in cfg.derived_values(experiment.agent_cls.config_class, meta["config"], experiment.spec).items():
        if value != config[key]:
            print(
                f"offrl: {key} is now {config[key]}, not {value}: from step {step} on, this run differs from one "
                f"trained from scratch with {key} {config[key]}"
            )
    return dict(meta.get("timing") or {})


def cut_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics.jsonl rows after `step` (and a line a kill cut short): a resumed run
    trains those steps again from the restored state and logs them anew."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line + "\n")
    ckpt.write_atomic(path, "".join(kept))


class Evaluation:
    """Every member's evaluation in one batch of envs: seed k gets the episodes and policy keys a
    single run with seed k gets (`offrl.evaluation.evaluate_seeds`); the action scatter goes to
    the member's logger, the results back to the loop."""

    def __init__(self, experiment: Experiment, loggers: list[RunLogger], reference_actions: np.ndarray | None) -> None:
        self.config, self.spec, self.members, self.loggers = experiment.config, experiment.spec, experiment.members, loggers
        self.reference_actions = reference_actions
        self.episodes_per_seed = int(self.config["eval_episodes"])
        self.envs = make_eval_vector_env(self.spec, self.episodes_per_seed * len(self.members), self.config["seed"])

    def __call__(self, state: LoopState, step: int) -> list[dict[str, float]]:
        seeds = [member.seed for member in self.members]
        episodes = evaluate_seeds(
            self.envs, state, seeds, self.episodes_per_seed, self.config["eval_deterministic"], step, record_transitions=False
        )
        results = []
        for member, seed_episodes, logger in zip(self.members, episodes, self.loggers):
            results.append(summarize_episodes(
                seed_episodes, lambda returns: normalized_score(self.spec, returns),
                lambda returns: d4rl_normalized_score(self.spec, returns),
            ))
            if self.reference_actions is not None:
                title = f"{self.config['agent']} {member.label} step {step}"
                logger.log_figure("eval/actions", action_scatter(self.reference_actions, seed_episodes["actions"][:2000], title), step)
        return results

    def close(self) -> None:
        self.envs.close()


class Clock:
    """The run's training time and wall time over every process that trained it: `prior` (what
    the restored checkpoint recorded) plus this process's."""

    def __init__(self, prior: dict[str, float]) -> None:
        self.prior, self.started = prior, time.perf_counter()
        self.train_seconds, self.updates = 0.0, 0

    def trained(self, updates: int, seconds: float) -> None:
        self.updates += updates
        self.train_seconds += seconds

    def timing(self) -> dict[str, float]:
        return {
            "train_seconds": self.prior.get("train_seconds", 0.0) + self.train_seconds,
            "wall_seconds": self.prior.get("wall_seconds", 0.0) + time.perf_counter() - self.started,
        }


def first_nonfinite(stacked_info: dict[str, np.ndarray]) -> tuple[int, str] | None:
    """(index within the chunk, metric name) of the first NaN/Inf, or None."""
    worst = None
    for name, values in stacked_info.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if len(bad) and (worst is None or bad[0] < worst[0]):
            worst = (int(bad[0]), name)
    return worst


def check_finite(
    info: dict[str, np.ndarray], step: int, members: tuple[Member, ...], checkpointers: list[ckpt.Checkpointer],
    checkpoint_interval: int,
) -> None:
    """Raise `NonFiniteLossError` at the first NaN/Inf of any member's chunk of updates from `step`."""
    for index, member in enumerate(members):
        bad = first_nonfinite({name: values[index] for name, values in info.items()})
        if bad is not None:
            # A loss can blow up before the first checkpoint, and then there is none to point to.
            saved = checkpointers[index].latest_step()
            kept = (f"no checkpoint was saved (the first was due at update {checkpoint_interval})" if saved is None
                    else f"the last good checkpoint (update {saved}) in {checkpointers[index].directory} is kept")
            raise NonFiniteLossError(f"{bad[1]} became non-finite at update {step + bad[0] + 1} ({member.label}); stopped, "
                                     f"{kept} (lower the learning rates or check the data)")
