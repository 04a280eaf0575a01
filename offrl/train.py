"""The one runner: `run(config)` trains any agent over a data source, with one path for
evaluation, logging, checkpoints, resume and summaries.

A data source (`DataSource`) is the only thing that differs between agents: a fixed dataset
on the device (`DatasetSource`, offline agents) or episodes collected from a vector env
between updates (`offrl.online.EpisodeSource`, online agents). The JAX core it drives, the
loop state and the fused update chunk over a seed axis, is `offrl.loop`; evaluation is
`offrl.evaluation`, checkpoints `offrl.checkpoint`, logging `offrl.logging`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from offrl.agents import agent_config, get_agent
from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.buffer import ReplayBuffer, observation_statistics
from offrl.envs import d4rl_normalized_score, make_eval_vector_env, normalized_score
from offrl.envs.spec import DatasetSpec
from offrl.evaluation import action_scatter, evaluate_seeds, summarize_episodes
from offrl.logging import RunLogger
from offrl.loop import LoopState, with_config_hyperparameters, make_seeds_train_chunk, replicate, seed_slice, shard_seeds, stack_states
from offrl.online import EpisodeSource, example_batch, online_spec
from offrl.run_config import derived_keys, given_resume_config, with_derived
from offrl.transitions import Transitions
from offrl.vmap import check_vmap, combination_name, combinations, parse_vmap


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint, if any, is kept."""


class DataSource(Protocol):
    """Where a run's batches come from. The runner calls `train` between its returns to
    Python and never looks at the data itself."""

    description: str  # "on <data> (<size>)", for the run's first line
    example_batch: dict[str, np.ndarray]  # the rows agents are created from (their shapes go into checkpoints)
    updates_per_call: int  # updates between two returns to Python (the logging interval)
    reference_actions: np.ndarray | None  # data actions drawn beside the policy's at evaluation (2-D actions), or None

    def prepare(self, state: LoopState) -> LoopState:
        """A member's fresh state made ready for this data (e.g. the dataset's normalizer)."""

    def train(self, state: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], list[dict[str, float]]]:
        """`length` updates of every member (leading seed axis of `state`): the new state, the
        updates' info ([members, length] per metric) and each member's extra metrics."""

    def summary(self, steps: int) -> dict[str, Any]:
        """What the source adds to a finished run's summary."""

    def close(self) -> None:
        """Release envs and other resources."""


def normalize_transitions(transitions: Transitions, mean: np.ndarray, std: np.ndarray) -> Transitions:
    return Transitions(
        **{
            **transitions.as_dict(),
            "observations": (transitions.observations - mean) / std,
            "next_observations": (transitions.next_observations - mean) / std,
        }
    )


class DatasetSource:
    """A fixed dataset on the device (`ReplayBuffer`, copied to every device): each chunk is
    one jitted `lax.scan` of updates over the seed axis, sampling its batches from it."""

    def __init__(self, experiment: Experiment, transitions: Transitions | None = None) -> None:
        config, spec = experiment.config, experiment.spec
        transitions = experiment.transitions if transitions is None else transitions
        if spec.env_factory is None:
            raise cfg.ConfigError(
                f"dataset {spec.name!r} has no known evaluation env; give one with --env ENV_ID (a gymnasium id, e.g. Hopper-v5)"
            )
        if config.get("reward_shift", 0.0):
            # Without terminals a constant shift moves every Q by shift / (1 - gamma) and leaves
            # the optimal policy alone; it changes where the critic starts relative to its targets.
            transitions = Transitions(**{**transitions.as_dict(), "rewards": transitions.rewards + config["reward_shift"]})
        self.normalizer: tuple[np.ndarray, np.ndarray] | None = None
        if config["normalize_observations"]:
            self.normalizer = observation_statistics(transitions.observations)
            transitions = normalize_transitions(transitions, *self.normalizer)
        rows = np.random.default_rng(config["seed"]).choice(
            len(transitions), size=min(len(transitions), config["example_batch_size"]), replace=False
        )
        self.example_batch = transitions[np.sort(rows)].as_dict()
        self.description = f"on {config['dataset']} ({len(transitions)} transitions)"
        if config["batch_size"] > len(transitions):  # allowed: `ReplayBuffer.sample` draws rows with replacement
            print(f"offrl: warning: batch_size {config['batch_size']} is larger than the {len(transitions)} rows of "
                  f"{config['dataset']}; batches sample rows with replacement, so each repeats rows", file=sys.stderr)
        self.updates_per_call = int(config["updates_per_call"])
        self.reference_actions = (
            transitions.actions[np.random.default_rng(0).choice(len(transitions), 2000)] if transitions.action_dim == 2 else None
        )
        self.buffer = replicate(ReplayBuffer.from_transitions(transitions))
        self.agent_cls = experiment.agent_cls
        self.chunks: dict[int, Callable] = {}  # one compiled chunk per length

    def prepare(self, state: LoopState) -> LoopState:
        if self.normalizer is None:
            return state
        return state.replace(obs_mean=jnp.asarray(self.normalizer[0]), obs_std=jnp.asarray(self.normalizer[1]))

    def train(self, state: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], list[dict[str, float]]]:
        if length not in self.chunks:
            self.chunks[length] = make_seeds_train_chunk(self.agent_cls, length)
        state, info = self.chunks[length](state, self.buffer)
        return state, info, [{} for _ in range(int(state.step.shape[0]))]

    def summary(self, steps: int) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def data_source(experiment: Experiment, transitions: Transitions | None = None) -> DataSource:
    """The experiment's data as a source of batches; `transitions` replace the dataset's rows."""
    if transitions is not None:
        check_replacement(experiment.transitions, transitions)
    if getattr(experiment.agent_cls, "online", False):
        return EpisodeSource(experiment.config, experiment.spec, experiment.agent_cls)
    return DatasetSource(experiment, transitions)


def seed_run_dirs(run_dir: Path, seeds: list[int]) -> list[Path]:
    """One seed keeps the run directory; several get run_dir/seed<N> each, a complete run
    directory of its own (config, metrics, checkpoints, summary) that evaluate.py restores."""
    if len(seeds) == 1:
        return [run_dir]
    return [run_dir / f"seed{seed}" for seed in seeds]


def seed_config(config: dict[str, Any], seed: int, directory: Path) -> dict[str, Any]:
    """The config one seed of a multi-seed run would have had as a single run.

    W&B: one run per seed, grouped (the group defaults to the run directory's name)."""
    if config["num_seeds"] == 1:
        return config
    wandb_settings = dict(config["wandb"])
    base_name = wandb_settings.get("name") or Path(config["run_dir"]).name
    wandb_settings.update(group=wandb_settings.get("group") or base_name, name=f"{base_name}-seed{seed}")
    single = {**config, "seed": seed, "num_seeds": 1, "run_dir": str(directory), "wandb": wandb_settings}
    directory.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(directory, single)
    return single


@dataclass
class Member:
    """One run trained in a batch: a seed (--num-seeds) of one --vmap combination."""

    seed: int
    combination: dict[str, Any]
    config: dict[str, Any]  # what it would be as a single run
    directory: Path


def combination_config(config: dict[str, Any], combination: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The config one --vmap combination would have as a run of its own (its seeds still
    batched): one W&B group for the whole grid, the combination in each run's name."""
    wandb_settings = dict(config["wandb"])
    base_name = wandb_settings.get("name") or Path(config["run_dir"]).name
    wandb_settings.update(group=wandb_settings.get("group") or base_name, name=f"{base_name}-{combination_name(combination)}")
    directory.mkdir(parents=True, exist_ok=True)
    single = {**config, **combination, "vmap": None, "run_dir": str(directory), "wandb": wandb_settings}
    ckpt.save_config(directory, single)
    return single


def batch_members(config: dict[str, Any], run_dir: Path, grid: dict[str, list[Any]]) -> list[Member]:
    """Combination-major, seed-minor. Without --vmap these are the seeds in their usual
    directories; with it, each combination gets run_dir/<key=value...>, laid out like a
    --num-seeds run (run_dir/<combination>/seed<N> when there are several seeds)."""
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    members = []
    for combination in combinations(grid):
        if combination:
            directory = run_dir / combination_name(combination)
            parent = combination_config(config, combination, directory)
        else:
            directory, parent = run_dir, config
        for seed, seed_dir in zip(seeds, seed_run_dirs(directory, seeds)):
            members.append(Member(seed, combination, seed_config(parent, seed, seed_dir), seed_dir))
    return members


def member_label(member: Member) -> str:
    return " ".join([*(f"{key}={value}" for key, value in member.combination.items()), f"seed {member.seed}"])


def score_of(result: dict[str, float]) -> float:
    return result.get("normalized_score", result["return_mean"])


def aggregate_over_seeds(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over seeds of each final metric, and its sample standard deviation across seeds
    (`<name>_seed_std`, ddof 1)."""
    out: dict[str, float] = {}
    for name in ("return_mean", "normalized_score", "d4rl_normalized_score", "success_rate", "length_mean", "steps_to_goal"):
        values = [summary[name] for summary in summaries if summary.get(name) is not None]
        if values:
            out[name] = float(np.mean(values))
            # the sample spread (ddof 1), what a table of a few seeds should show
            out[f"{name}_seed_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out["episodes"] = int(sum(summary["episodes"] for summary in summaries))
    return out


def first_nonfinite(stacked_info: dict[str, np.ndarray]) -> tuple[int, str] | None:
    """(index within the chunk, metric name) of the first NaN/Inf, or None."""
    worst = None
    for name, values in stacked_info.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if len(bad) and (worst is None or bad[0] < worst[0]):
            worst = (int(bad[0]), name)
    return worst


def kept_checkpoint(checkpointer: ckpt.Checkpointer, checkpoint_interval: int) -> str:
    """What a stopped run leaves to resume from, for its error message: a loss can blow up
    before the first checkpoint, and then there is none to point to."""
    saved = checkpointer.latest_step()
    if saved is None:
        return f"no checkpoint was saved (the first was due at update {checkpoint_interval})"
    return f"the last good checkpoint (update {saved}) in {checkpointer.directory} is kept"


@dataclass
class Experiment:
    """Everything a run or an evaluation needs, built from a resolved config."""

    config: dict[str, Any]
    agent_cls: type
    agent_defaults: dict[str, Any]
    spec: DatasetSpec
    transitions: Transitions | None

    def initial_state(
        self, example_batch: dict[str, np.ndarray], seed: int | None = None, config: dict[str, Any] | None = None
    ) -> LoopState:
        """`config` (default the experiment's) gives the hyperparameters, e.g. a --vmap member's."""
        config = self.config if config is None else config
        seed = config["seed"] if seed is None else seed
        init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
        agent = self.agent_cls.create(agent_config(config["agent"], config), example_batch, init_key)
        state = LoopState.initial(agent, loop_key, example_batch["observations"].shape[-1])
        # Python scalars (e.g. optimizer step counters) become arrays, as they are after any update,
        # so a fresh state and a restored one have the same structure.
        return jax.tree_util.tree_map(jnp.asarray, state)


def build_experiment(config: dict[str, Any]) -> Experiment:
    """The agent and its data (an offline agent's dataset, loaded or built on first use; an
    online agent's env), the agent's derived keys computed from them."""
    from offrl.data import load_dataset

    agent_cls, agent_defaults = get_agent(config["agent"])
    if getattr(agent_cls, "online", False):
        transitions, spec = None, online_spec(config)
    else:
        # Configs saved before `d4rl_reward` existed chose the convention by file name, as `auto` does.
        d4rl_reward = config.get("d4rl_reward", "auto")
        transitions, spec = load_dataset(config["dataset"], env_id=config.get("env"), d4rl_reward=d4rl_reward)
    return Experiment(with_derived(config, spec), agent_cls, agent_defaults, spec, transitions)


def check_replacement(dataset: Transitions | None, replacement: Transitions) -> None:
    if dataset is None:
        raise cfg.ConfigError("transitions replace an offline dataset's rows; this agent has no dataset")
    for name in ("observations", "actions"):
        if getattr(dataset, name).shape[1:] != getattr(replacement, name).shape[1:]:
            raise cfg.ConfigError(
                f"the given transitions' {name} have shape {getattr(replacement, name).shape[1:]} per row, but "
                f"the dataset has {getattr(dataset, name).shape[1:]}"
            )


def default_run_dir(config: dict[str, Any]) -> Path:
    slug = str(config["dataset"] or config["env"]).replace("/", "_").replace(".hdf5", "")
    return Path("runs") / config["agent"] / slug / f"s{config['seed']}-{time.strftime('%Y%m%d-%H%M%S')}"


def boundaries(total: int, *intervals: int) -> list[int]:
    """Sorted steps at which the loop must return to Python (every interval and the end)."""
    points = {total}
    for interval in intervals:
        points.update(range(interval, total, interval))
    return sorted(points)


def resumed_from(manager_dir: Path, step: int, config: dict[str, Any], spec: DatasetSpec) -> dict[str, float]:
    """Say what a resume from `step` to `config["steps"]` updates changes (the steps, and any
    derived agent key they change), and return the run's time up to `step` as its checkpoint
    recorded it."""
    meta = ckpt.read_meta(manager_dir, step)
    steps, before = int(config["steps"]), int(meta["config"]["steps"])
    print(f"offrl: resumed from step {step}" + (f", now training to step {steps} (was {before})" if steps != before else ""))
    for key, value in derived_keys(meta["config"], spec).items():
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


def summary_timing(steps: int, timing: dict[str, float]) -> dict[str, Any]:
    return {
        "steps": steps,
        "updates_per_second": steps / timing["train_seconds"] if timing["train_seconds"] else None,
        "wall_seconds": timing["wall_seconds"],
    }


def run(
    config: dict[str, Any], *, stop_after: int | None = None, progress: bool = True, transitions: Transitions | None = None
) -> dict[str, Any]:
    """Train, evaluate, log and checkpoint one run; returns the final evaluation summary.

    `stop_after` ends this process's work after that many updates, as a kill would (no
    final evaluation, no summary), so preemption and `--resume` can be tested exactly.
    `transitions` trains on these rows instead of the named dataset's (e.g. its rows with
    relabeled rewards); the dataset still gives the evaluation env and scores. They are
    not saved: a resumed run must be given them again.
    """
    resume = bool(config.get("resume"))
    experiment = build_experiment(run_config(config))
    config, spec = experiment.config, experiment.spec
    steps = int(config["steps"])
    eval_interval = int(config["eval_interval"] or max(1, math.ceil(steps / 10)))
    checkpoint_interval = int(config["checkpoint_interval"] or eval_interval)
    with contextlib.ExitStack() as stack:
        def closed_at_exit(resource: Any) -> Any:
            return stack.enter_context(contextlib.closing(resource))

        source = closed_at_exit(data_source(experiment, transitions))
        grid = check_vmap(parse_vmap(config.get("vmap")), config, experiment.agent_cls)
        states = initial_states(experiment, source, grid)  # before any write: a rejected config leaves no run directory
        stack.enter_context(ckpt.run_dir_lock(Path(config["run_dir"])))  # the first write; held until the run ends
        members = start_run_dir(config, source, grid)
        # Before the checkpoint managers open: a resume removes the steps after the one it restores.
        states, prior = restored_states(states, members, experiment) if resume else (states, {})
        keep = config["keep_checkpoints"]
        metas = member_metas(config, members, source, spec)
        checkpointers = [closed_at_exit(ckpt.Checkpointer(m.directory, keep, meta)) for m, meta in zip(members, metas)]
        state = shard_seeds(stack_states(states))
        loggers = [closed_at_exit(RunLogger(m.directory, m.config, resume=resume, concurrent=len(members) > 1)) for m in members]
        evaluate = closed_at_exit(Evaluation(config, spec, members, loggers, source.reference_actions))
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
        timing = summary_timing(steps, clock.timing())
        return write_summaries(config, members, loggers, last_eval, {**timing, **source.summary(steps)}, grid)


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config a run trains with: a resume's (see `given_resume_config`), checked, with its
    run directory decided (written back into `config` when it is not a resume)."""
    if config.get("resume"):
        config = given_resume_config(config)
    cfg.validate(config, get_agent(config["agent"])[0].config_class)
    config["run_dir"] = str(config["run_dir"] or default_run_dir(config))
    return config


def initial_states(experiment: Experiment, source: DataSource, grid: dict[str, list[Any]]) -> list[LoopState]:
    """Every member's fresh state, combination-major and seed-minor (as `batch_members`)."""
    config = experiment.config
    for combination in combinations(grid):
        cfg.validate({**config, **combination}, experiment.agent_cls.config_class)
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    return [source.prepare(experiment.initial_state(source.example_batch, seed, {**config, **combination}))
            for combination in combinations(grid) for seed in seeds]


def start_run_dir(config: dict[str, Any], source: DataSource, grid: dict[str, list[Any]]) -> list[Member]:
    """The run directory with its config.json, the run's first lines, and its members' directories."""
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(run_dir, config)
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    print(f"offrl: {config['agent']} {source.description}, seeds {seeds}"
          f"{f', {len(combinations(grid))} combinations of {list(grid)}' if grid else ''} -> {run_dir}")
    print(cfg.to_json(config))
    # A batch is the seed axis grown to (combination x seed): the loop treats every member as
    # it treats a seed, with that member's seed for its keys and eval envs.
    return batch_members(config, run_dir, grid)


def member_metas(config: dict[str, Any], members: list[Member], source: DataSource, spec: DatasetSpec) -> list[dict[str, Any]]:
    """What each member's checkpoints store beside the state, to be restored without the data."""
    env = ckpt.env_record(spec)
    return [ckpt.run_meta(config["agent"], member.config, source.example_batch, env) for member in members]


def restored_states(
    states: list[LoopState], members: list[Member], experiment: Experiment
) -> tuple[list[LoopState], dict[str, float]]:
    """Each member's state at the newest step every member saved intact (members save together;
    a kill between two saves leaves the older step in every one; `ckpt.resume_step`), with the
    hyperparameters of the config (`with_config_hyperparameters`), metrics.jsonl cut back to it, and the
    run's time until then."""
    directories = [member.directory / "checkpoints" for member in members]
    restored = ckpt.resume_step(directories)
    prior: dict[str, float] = {}
    if restored:
        states = [with_config_hyperparameters(ckpt.restore(d, restored, s), s) for d, s in zip(directories, states)]
        prior = resumed_from(directories[0], restored, experiment.config, experiment.spec)
    for member in members:
        cut_metrics(member.directory, restored)
    return states, prior


class Evaluation:
    """Every member's evaluation in one batch of envs: seed k gets the episodes and policy keys a
    single run with seed k gets (`offrl.evaluation.evaluate_seeds`); the action scatter goes to
    the member's logger, the results back to the loop."""

    def __init__(
        self, config: dict[str, Any], spec: DatasetSpec, members: list[Member], loggers: list[RunLogger],
        reference_actions: np.ndarray | None,
    ) -> None:
        self.config, self.spec, self.members, self.loggers = config, spec, members, loggers
        self.reference_actions = reference_actions
        self.episodes_per_seed = int(config["eval_episodes"])
        self.envs = make_eval_vector_env(spec, self.episodes_per_seed * len(members), config["seed"])

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
                title = f"{self.config['agent']} {member_label(member)} step {step}"
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


def check_finite(
    info: dict[str, np.ndarray], step: int, members: list[Member], checkpointers: list[ckpt.Checkpointer], checkpoint_interval: int
) -> None:
    """Raise `NonFiniteLossError` at the first NaN/Inf of any member's chunk of updates from `step`."""
    for index, member in enumerate(members):
        bad = first_nonfinite({name: values[index] for name, values in info.items()})
        if bad is not None:
            raise NonFiniteLossError(
                f"{bad[1]} became non-finite at update {step + bad[0] + 1} ({member_label(member)}); stopped, "
                f"{kept_checkpoint(checkpointers[index], checkpoint_interval)} (lower the learning rates or check the data)"
            )


def write_summaries(
    config: dict[str, Any], members: list[Member], loggers: list[RunLogger], results: list[dict[str, float]], extra: dict[str, Any],
    grid: dict[str, list[Any]],
) -> dict[str, Any]:
    """summary.json for every member, for every combination over its seeds and for the grid;
    returns the run's (the one member's, or the aggregate)."""
    summaries = [{**member.combination, **result, **extra, "seed": member.seed} for result, member in zip(results, members)]
    for member, summary, logger in zip(members, summaries, loggers):
        ckpt.write_json_atomic(member.directory / "summary.json", summary)
        logger.summary(summary)
    per_combination = []
    num_seeds = int(config["num_seeds"])
    for start, combination in zip(range(0, len(members), num_seeds), combinations(grid)):
        seed_summaries = summaries[start:start + num_seeds]
        if num_seeds == 1:
            per_combination.append(seed_summaries[0])
            continue
        combined = {**combination, **aggregate_over_seeds(seed_summaries), **extra, "seeds": seed_summaries}
        ckpt.write_json_atomic(members[start].directory.parent / "summary.json", combined)
        per_combination.append(combined)
    if not grid:
        return per_combination[0]
    summary = {"vmap": grid, **extra, "combinations": per_combination}
    ckpt.write_json_atomic(Path(config["run_dir"]) / "summary.json", summary)
    return summary


def restore_run(path: str | Path, which: str = "latest", data: bool = True) -> tuple[LoopState, Experiment, int]:
    """The saved loop state of a run directory or checkpoint, on this machine's device.

    With `data=False` it needs only the run directory: the agent is rebuilt from the config
    and input shapes saved with the checkpoint, the evaluation env from its stored
    description, and the experiment has no transitions. With `data=True` (for analyses
    over the dataset) an offline run's dataset is loaded too. Older run directories
    restore through their dataset either way."""
    manager_dir, step = ckpt.find_checkpoint(path, which)
    run_dir = ckpt.run_dir_of(manager_dir)
    if manager_dir.name in ckpt.LEGACY_MANAGERS:
        return _restore_legacy_run(manager_dir, step, run_dir)
    meta = ckpt.read_meta(manager_dir, step)
    experiment = experiment_from_meta(meta, run_dir)
    if data and experiment.config.get("dataset") and not getattr(experiment.agent_cls, "online", False):
        experiment = replace(experiment, transitions=build_experiment(experiment.config).transitions)
    abstract_state = jax.eval_shape(lambda: experiment.initial_state(ckpt.zeros_batch(meta["example_batch"])))
    return ckpt.restore(manager_dir, step, abstract_state), experiment, step


def experiment_from_meta(meta: dict[str, Any], run_dir: Path) -> Experiment:
    """The experiment a checkpoint's meta describes, without its dataset (see `restore_run`).

    Agent keys added since the run was saved take their current defaults; `run_dir` is where
    the run is now (it may have been copied since)."""
    agent_cls, agent_defaults = get_agent(meta["agent"])
    config = {**agent_defaults, **meta["config"], "run_dir": str(run_dir)}
    spec = ckpt.spec_from_record(meta["env"])
    if spec is None:  # an env not storable as JSON: rebuilt from the dataset, as before
        return build_experiment(config)
    return Experiment(with_derived(config, spec), agent_cls, agent_defaults, spec, transitions=None)


def _restore_legacy_run(manager_dir: Path, step: int, run_dir: Path) -> tuple[LoopState, Experiment, int]:
    """A checkpoint from before self-contained checkpoints (checkpoints/latest, best): its
    shapes come from the dataset, which must therefore be present."""
    from offrl.data import DatasetError

    config = ckpt.load_config(run_dir)
    try:
        experiment = build_experiment(config)
    except (DatasetError, FileNotFoundError) as error:
        raise FileNotFoundError(
            f"{run_dir} was saved before checkpoints stored their input shapes, so restoring it needs its dataset "
            f"{config.get('dataset')!r}, which failed: {error}"
        ) from None
    if getattr(experiment.agent_cls, "online", False):  # no dataset: rows shaped like the env's
        rows = example_batch(experiment.spec)
    else:
        rows = experiment.transitions[: max(256, int(config.get("num_tokens", 0)))].as_dict()
    abstract_state = jax.eval_shape(lambda: experiment.initial_state(rows))
    return ckpt.restore(manager_dir, step, abstract_state), experiment, step
