"""The training loop every offline agent shares.

The dataset lives on the device in a `ReplayBuffer`; `updates_per_call` updates (batch
sampling included) run inside one jitted `lax.scan`, so Python is touched only between
calls: to log, evaluate and checkpoint. The whole loop state (agent, RNG, step,
normalizer) is one pytree, which is what makes resume exact and checkpoints complete.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, replace
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
from offrl.transitions import Transitions
from offrl.evaluation import action_scatter, run_episodes, summarize_episodes
from offrl.logging import RunLogger
from offrl.vmap import check_vmap, combination_name, combinations, parse_vmap


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint, if any, is kept."""


@flax.struct.dataclass
class LoopState:
    agent: Any
    rng: jax.Array
    step: jax.Array
    obs_mean: jax.Array
    obs_std: jax.Array

    @classmethod
    def initial(cls, agent: Any, rng: jax.Array, obs_dim: int) -> LoopState:
        """Step 0, observations left as they are (zero mean, unit scale)."""
        return cls(
            agent=agent,
            rng=rng,
            step=jnp.asarray(0, jnp.int32),
            obs_mean=jnp.zeros(obs_dim, jnp.float32),
            obs_std=jnp.ones(obs_dim, jnp.float32),
        )


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


def make_seeds_train_chunk(agent_cls: type, num_updates: int) -> Callable[[LoopState, ReplayBuffer], tuple[LoopState, dict]]:
    """`make_train_chunk` over a leading seed axis of the state: one compilation for all seeds,
    the dataset shared. With several devices the seed axis is sharded (see `shard_seeds`).

    The input state is donated: the new state reuses its buffers instead of holding a second
    copy of every seed's parameters and optimizer moments on the device, so the caller must
    not touch the state it passed in again."""
    return jax.jit(jax.vmap(make_train_chunk(agent_cls, num_updates), in_axes=(0, None)), donate_argnums=0)


def stack_states(states: list[Any]) -> Any:
    """One state with a leading seed axis. Seeds built by separate `create` calls hold equal
    but distinct static parts (apply_fn, optimizer), so the first one's structure is kept."""
    structure = jax.tree_util.tree_structure(states[0])
    columns = zip(*(jax.tree_util.tree_leaves(state) for state in states))
    return jax.tree_util.tree_unflatten(structure, [jnp.stack(leaves) for leaves in columns])


def seed_slice(state: Any, index: int) -> Any:
    return jax.tree_util.tree_map(lambda leaf: leaf[index], state)


def device_mesh() -> jax.sharding.Mesh:
    """All devices on one axis, the seed axis."""
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("seeds",))


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh | None:
    """A 1-D device mesh over the seed axis, when there are several devices and they divide it."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if num_seeds % len(devices):
        print(f"offrl: {num_seeds} seeds do not split evenly over {len(devices)} devices; using one device")
        return None
    return device_mesh()


def shard_seeds(state: Any) -> Any:
    """Place the leading (seed) axis of every leaf across the devices; jit then runs each
    device's seeds where they live (GSPMD), with no change to the update code."""
    mesh = seed_mesh(int(jax.tree_util.tree_leaves(state)[0].shape[0]))
    if mesh is None:
        return state
    return jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")))


def replicate(tree: Any) -> Any:
    """A full copy of `tree` (the dataset) on every device."""
    if len(jax.devices()) == 1:
        return tree
    return jax.device_put(tree, jax.sharding.NamedSharding(device_mesh(), jax.sharding.PartitionSpec()))


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
    """Mean over seeds of each final metric, and its spread across seeds (`<name>_seed_std`)."""
    out: dict[str, float] = {}
    for name in ("return_mean", "normalized_score", "success_rate", "length_mean", "steps_to_goal"):
        values = [summary[name] for summary in summaries if summary.get(name) is not None]
        if values:
            out[name] = float(np.mean(values))
            out[f"{name}_seed_std"] = float(np.std(values))
    out["episodes"] = int(sum(summary["episodes"] for summary in summaries))
    return out


@functools.partial(jax.jit, static_argnames=("treedef", "deterministic"))
def _seeds_actions(
    treedef: Any, leaves: list[jax.Array], observations: jax.Array, keys: jax.Array, deterministic: bool
) -> jax.Array:
    """Seed k's agent (leading seed axis) acts on the k-th block of observations with keys[k].

    (agent, obs_mean, obs_std) come flattened: a list of arrays is dispatched several times
    faster than the agent's nested pytree, which matters at one call per environment step."""
    agent, obs_mean, obs_std = jax.tree_util.tree_unflatten(treedef, leaves)

    def act(agent: Any, mean: jax.Array, std: jax.Array, block: jax.Array, key: jax.Array) -> jax.Array:
        return agent.sample_actions((block - mean) / std, key, deterministic=deterministic)

    blocks = observations.reshape(keys.shape[0], -1, observations.shape[-1])
    actions = jax.vmap(act)(agent, obs_mean, obs_std, blocks, keys)
    return actions.reshape(-1, *actions.shape[2:])


def make_seeds_policy(state: LoopState, deterministic: bool) -> Callable:
    """Every seed's policy on its own equal block of the observations, in one call.

    Takes one key per seed ([seeds, 2]), so seed k's actions are those of a single-seed run.
    The state is an argument of one module-level jitted function rather than a constant of a
    fresh closure, so a run compiles its evaluation policy once, not at every evaluation."""
    leaves, treedef = jax.tree_util.tree_flatten((state.agent, state.obs_mean, state.obs_std))
    return lambda observations, keys: _seeds_actions(treedef, leaves, observations, keys, deterministic)


def eval_env_seeds(seeds: list[int], episodes_per_seed: int) -> list[int]:
    """The evaluation envs' reset seeds, seed after seed: every evaluation of a run with seed
    k starts from the same states, so scores at different steps (or of other policies) pair up."""
    return [seed + 10_000 + j for seed in seeds for j in range(episodes_per_seed)]


def evaluate_seeds(
    envs: Any,
    state: LoopState,
    seeds: list[int],
    episodes_per_seed: int,
    deterministic: bool,
    step: int,
    record_transitions: bool = True,
) -> list[dict[str, np.ndarray]]:
    """One batch of episodes for all seeds; seed k gets the environment seeds and policy keys
    a single-seed run with seed k would use, so the two evaluate identically. Without
    `record_transitions` only the per-episode results and the actions come back (faster)."""
    policy = make_seeds_policy(state, deterministic)
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed + 1), step) for seed in seeds])
    episodes = run_episodes(envs, policy, keys, eval_env_seeds(seeds, episodes_per_seed), record_transitions)
    return split_episodes(episodes, len(seeds), episodes_per_seed)


def evaluate_state(
    state: LoopState, spec: Any, episodes: int, seed: int, deterministic: bool, step: int
) -> dict[str, np.ndarray]:
    """`episodes` episodes of one (unstacked) state in the env of `spec` (a `DatasetSpec` or
    a gymnasium id): the episodes a run with `seed` evaluates at `step`, as `run_episodes`
    returns them."""
    from offrl.envs import make_eval_vector_env

    envs = make_eval_vector_env(spec, episodes, seed)
    try:
        return evaluate_seeds(envs, stack_states([state]), [seed], episodes, deterministic, step)[0]
    finally:
        envs.close()


def split_episodes(episodes: dict[str, np.ndarray], num_seeds: int, per_seed: int) -> list[dict[str, np.ndarray]]:
    per_env = ("returns", "lengths", "successes", "success_steps")
    out = []
    for index in range(num_seeds):
        envs = slice(index * per_seed, (index + 1) * per_seed)
        if "env_ids" in episodes:
            rows = (episodes["env_ids"] >= index * per_seed) & (episodes["env_ids"] < (index + 1) * per_seed)
        out.append({name: values[envs] if name in per_env else values[rows] for name, values in episodes.items()})
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


def config_hparams(restored: LoopState, fresh: LoopState) -> LoopState:
    """The restored state with the hyperparameter leaves (an agent's `hparams`, optimizers'
    injected `hyperparams`) of the state built from the config: the config decides the
    hyperparameters, the checkpoint what was learned, so a run resumed with an edited config
    (e.g. a lower learning rate) trains with the edited values, as when they were constants."""

    def pick(path: tuple, restored_leaf: Any, fresh_leaf: Any) -> Any:
        names = {getattr(entry, "name", getattr(entry, "key", None)) for entry in path}
        return fresh_leaf if names & {"hparams", "hyperparams"} else restored_leaf

    return jax.tree_util.tree_map_with_path(pick, restored, fresh)


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

    def initial_state(
        self, example_batch: dict[str, np.ndarray], seed: int | None = None, config: dict[str, Any] | None = None
    ) -> LoopState:
        """`config` (default the experiment's) gives the hyperparameters, e.g. a --vmap member's."""
        config = self.config if config is None else config
        seed = config["seed"] if seed is None else seed
        init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
        agent = self.agent_cls.create(cfg.agent_config(config, self.agent_defaults), example_batch, init_key)
        state = LoopState.initial(agent, loop_key, example_batch["observations"].shape[-1])
        # Python scalars (e.g. optimizer step counters) become arrays, as they are after any update,
        # so a fresh state and a restored one have the same structure.
        return jax.tree_util.tree_map(jnp.asarray, state)


def resolve_config(argv_overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge defaults, presets, --config and command-line overrides (see offrl.config).

    With `resume`, the run's saved config with the overrides applied (`resume_config`)."""
    overrides = dict(argv_overrides)
    if overrides.get("resume"):
        return resume_config(overrides.pop("resume"), overrides)
    agent_name = overrides.get("agent", cfg.RUN_DEFAULTS["agent"])
    _, agent_defaults = get_agent(agent_name)
    config = cfg.base_config(agent_defaults)
    config["agent"] = agent_name
    dataset = overrides.get("dataset") or config["dataset"]
    env = overrides.get("env")
    if dataset is None and env is None:
        dataset = cfg.DEFAULT_DATASET
    family = _data_family(dataset, overrides.get("d4rl_reward", "auto")) if dataset is not None else str(env)
    for path in cfg.preset_paths(agent_name.split("-")[0], family):
        cfg.merge(config, cfg.load_yaml(path), str(path))
    file_path = overrides.pop("config", None)
    if file_path:
        cfg.merge(config, cfg.load_yaml(file_path), str(file_path))
    cfg.merge(config, overrides, "command line")
    config["dataset"] = dataset
    cfg.validate(config)
    return config


# Keys a resumed run may change: they decide how long it trains and when it evaluates,
# checkpoints and logs, not what an update computes. (`steps` also sets the length of a
# learning-rate schedule that depends on it, which `resumed_from` points out.)
RESUME_SAFE_KEYS = (
    "steps", "eval_interval", "eval_episodes", "eval_deterministic", "checkpoint_interval", "keep_checkpoints",
    "updates_per_call", "wandb",
)


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The saved config of `run_dir` with `overrides` applied: a key in `RESUME_SAFE_KEYS`
    takes its new value, a key given with the run's own value is fine, and any other change
    is a ConfigError naming the key (it would silently not be the run it claims to be)."""
    run_dir = Path(run_dir)
    saved = ckpt.load_config(run_dir)
    ckpt.check_resumable(run_dir)
    overrides = dict(overrides)
    file_path = overrides.pop("config", None)
    if file_path:
        overrides = {**cfg.load_yaml(file_path), **overrides}
    config = json.loads(json.dumps(saved))
    for key, value in overrides.items():
        trial = json.loads(json.dumps(saved))
        cfg.merge(trial, {key: value}, f"--resume {run_dir}")
        top = key.replace("-", "_").split(".")[0]
        if json.dumps(trial[top], default=list) == json.dumps(saved[top], default=list):
            continue
        if top not in RESUME_SAFE_KEYS:
            raise cfg.ConfigError(
                f"--resume {run_dir}: {key} is {saved[top]!r} in the run but {trial[top]!r} was given; a resumed run "
                f"keeps its data, agent and hyperparameters (it may change only {', '.join(RESUME_SAFE_KEYS)}): "
                f"start a new run to change {key}"
            )
        cfg.merge(config, {key: value}, f"--resume {run_dir}")
    reached = ckpt.saved_step(run_dir)
    if reached is not None and config["steps"] < reached:
        raise cfg.ConfigError(f"--steps {config['steps']} is below step {reached} the run has reached: give --steps {reached} or more")
    config.update(resume=str(run_dir), run_dir=str(run_dir))
    cfg.validate(config)
    return config


def given_resume_config(config: dict[str, Any]) -> dict[str, Any]:
    """`run`'s view of a resume: the keys of `config` that differ from the run defaults count
    as given (so `{**RUN_DEFAULTS, "resume": RUN_DIR}` is a plain resume) and go through
    `resume_config`; a config `resolve_config` resumed already passes unchanged."""
    given = {
        key: value
        for key, value in config.items()
        if key not in ("resume", "run_dir") and (key not in cfg.RUN_DEFAULTS or value != cfg.RUN_DEFAULTS[key])
    }
    return resume_config(config["resume"], given)


def _data_family(dataset: str, d4rl_reward: str) -> str:
    from offrl.data import dataset_family

    return dataset_family(dataset, d4rl_reward)


def build_experiment(config: dict[str, Any], load_data: bool = True) -> Experiment:
    from offrl.data import load_dataset

    agent_cls, agent_defaults = get_agent(config["agent"])
    if getattr(agent_cls, "online", False):
        from offrl.online import build_online_experiment

        return build_online_experiment(config, agent_cls, agent_defaults)
    # Configs saved before `d4rl_reward` existed chose the convention by file name, as `auto` does.
    d4rl_reward = config.get("d4rl_reward", "auto")
    transitions, spec = load_dataset(config["dataset"], env_id=config.get("env"), d4rl_reward=d4rl_reward) if load_data else (None, None)
    return Experiment(config, agent_cls, agent_defaults, spec, transitions)


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


def resumed_from(checkpointer: ckpt.Checkpointer, step: int, steps: int, agent_defaults: dict[str, Any]) -> dict[str, float]:
    """Say what a resume from `step` to `steps` updates changes, and return the run's
    time up to `step` as its checkpoint recorded it."""
    meta = ckpt.read_meta(checkpointer.directory, step)
    before = int(meta["config"]["steps"])
    print(f"offrl: resumed from step {step}" + (f", now training to step {steps} (was {before})" if steps != before else ""))
    if steps != before and "max_steps" in agent_defaults:
        print(
            f"offrl: max_steps (the length of the agent's learning-rate schedules) is now {steps}, not {before}: from "
            f"step {step} on, this run differs from a {steps}-step run trained from scratch"
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


def run_timing(prior: dict[str, float], train_seconds: float, started: float) -> dict[str, float]:
    """The run's time so far over every process that trained it: `prior` (what the restored
    checkpoint recorded) plus this process's training time and wall time since `started`."""
    return {
        "train_seconds": prior.get("train_seconds", 0.0) + train_seconds,
        "wall_seconds": prior.get("wall_seconds", 0.0) + time.perf_counter() - started,
    }


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
    resume_dir = config.get("resume")
    if resume_dir:
        config = given_resume_config(config)
    cfg.validate(config)
    run_dir = Path(config["run_dir"] or default_run_dir(config))
    config["run_dir"] = str(run_dir)
    experiment = build_experiment(config)
    if transitions is not None:
        check_replacement(experiment.transitions, transitions)
        experiment = replace(experiment, transitions=transitions)
    if getattr(experiment.agent_cls, "online", False):
        from offrl.online import run_online

        if int(config["num_seeds"]) != 1:
            raise cfg.ConfigError(
                f"--num-seeds is for offline agents; run {config['agent']} seeds as separate runs (--seed N) or a sweep"
            )
        check_vmap(parse_vmap(config.get("vmap")), config, experiment.agent_cls)  # refuses: online agents batch nothing
        return run_online(experiment, resume=bool(resume_dir), stop_after=stop_after, progress=progress)
    transitions, spec = experiment.transitions, experiment.spec
    steps = int(config["steps"])
    eval_interval = int(config["eval_interval"] or max(1, math.ceil(steps / 10)))
    checkpoint_interval = int(config["checkpoint_interval"] or eval_interval)
    updates_per_call = int(config["updates_per_call"])
    grid = check_vmap(parse_vmap(config.get("vmap")), config, experiment.agent_cls)
    if spec.env_factory is None:
        raise cfg.ConfigError(
            f"dataset {spec.name!r} has no known evaluation env; give one with --env ENV_ID (a gymnasium id, e.g. Hopper-v5)"
        )

    if config["normalize_observations"]:
        obs_mean, obs_std = observation_statistics(transitions.observations)
        transitions = normalize_transitions(transitions, obs_mean, obs_std)
    buffer = ReplayBuffer.from_transitions(transitions)
    example_rows = np.random.default_rng(config["seed"]).choice(
        len(transitions), size=min(len(transitions), config["example_batch_size"]), replace=False
    )
    example_batch = transitions[np.sort(example_rows)].as_dict()
    # The agents are built before anything is written: a config they reject leaves no run directory.
    for combination in combinations(grid):
        cfg.validate({**config, **combination})
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    states = [experiment.initial_state(example_batch, seed, {**config, **combination})
              for combination in combinations(grid) for seed in seeds]

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.save_config(run_dir, config)
    print(f"offrl: {config['agent']} on {config['dataset']} ({len(transitions)} transitions), seeds {seeds}"
          f"{f', {len(combinations(grid))} combinations of {list(grid)}' if grid else ''} -> {run_dir}")
    print(cfg.to_json(config))
    members = batch_members(config, run_dir, grid)
    # A batch is the seed axis grown to (combination x seed): the loop below treats every
    # member as it treats a seed, with that member's seed for its keys and eval envs.
    seeds = [member.seed for member in members]
    seed_dirs = [member.directory for member in members]
    seed_configs = [member.config for member in members]
    if config["normalize_observations"]:
        states = [state.replace(obs_mean=jnp.asarray(obs_mean), obs_std=jnp.asarray(obs_std)) for state in states]

    env = ckpt.env_record(spec)
    checkpointers = [
        ckpt.Checkpointer(directory, keep=config["keep_checkpoints"], meta=ckpt.run_meta(config["agent"], seed_cfg, example_batch, env))
        for directory, seed_cfg in zip(seed_dirs, seed_configs)
    ]
    saved_steps = {checkpointer.latest_step() for checkpointer in checkpointers}
    prior: dict[str, float] = {}
    if resume_dir:
        # Seeds are saved together; a kill between two saves leaves the older step in every seed.
        restored = min(saved_steps) if None not in saved_steps else 0
        if restored:
            states = [config_hparams(ckpt.restore(c.directory, restored, s), s) for c, s in zip(checkpointers, states)]
            prior = resumed_from(checkpointers[0], restored, steps, experiment.agent_defaults)
        for directory in seed_dirs:
            cut_metrics(directory, restored)
    state = shard_seeds(stack_states(states))
    buffer = replicate(buffer)
    loggers = [RunLogger(directory, seed_cfg, resume=bool(resume_dir), concurrent=len(seeds) > 1)
               for directory, seed_cfg in zip(seed_dirs, seed_configs)]
    from offrl.envs import make_eval_vector_env, normalized_score

    episodes_per_seed = int(config["eval_episodes"])
    eval_envs = make_eval_vector_env(spec, episodes_per_seed * len(seeds), config["seed"])
    dataset_actions = transitions.actions[np.random.default_rng(0).choice(len(transitions), 2000)]

    def evaluate(step: int) -> list[dict[str, float]]:
        episodes = evaluate_seeds(
            eval_envs, state, seeds, episodes_per_seed, config["eval_deterministic"], step, record_transitions=False
        )
        results = []
        for index, (seed_episodes, logger) in enumerate(zip(episodes, loggers)):
            results.append(summarize_episodes(seed_episodes, lambda returns: normalized_score(spec, returns)))
            if transitions.action_dim == 2:
                title = f"{config['agent']} {member_label(members[index])} step {step}"
                logger.log_figure("eval/actions", action_scatter(dataset_actions, seed_episodes["actions"][:2000], title), step)
        return results

    chunks: dict[int, Callable] = {}
    run_started = time.perf_counter()
    train_seconds, updates_done, last_eval = 0.0, 0, None
    bar = tqdm(total=steps, initial=int(state.step[0]), disable=not progress, unit="upd", dynamic_ncols=True)
    try:
        for boundary in boundaries(steps, updates_per_call, eval_interval, checkpoint_interval):
            step = int(state.step[0])
            if boundary <= step:
                continue
            length = boundary - step
            if length not in chunks:
                chunks[length] = make_seeds_train_chunk(experiment.agent_cls, length)
            started = time.perf_counter()
            new_state, stacked = chunks[length](state, buffer)
            stacked = jax.device_get(stacked)
            elapsed = time.perf_counter() - started
            for index in range(len(members)):
                bad = first_nonfinite({name: values[index] for name, values in stacked.items()})
                if bad is not None:
                    raise NonFiniteLossError(
                        f"{bad[1]} became non-finite at update {step + bad[0] + 1} ({member_label(members[index])}); stopped, "
                        f"{kept_checkpoint(checkpointers[index], checkpoint_interval)} (lower the learning rates or check the data)"
                    )
            state = new_state
            train_seconds += elapsed
            updates_done += length
            bar.update(length)
            for index, logger in enumerate(loggers):
                metrics = {f"train/{name}": float(np.mean(values[index])) for name, values in stacked.items()}
                metrics["train/updates_per_second"] = length / elapsed
                logger.log(metrics, step=boundary)
            evaluated = boundary % eval_interval == 0 or boundary == steps
            if evaluated:
                last_eval = evaluate(boundary)
                for logger, result in zip(loggers, last_eval):
                    logger.log({f"eval/{name}": value for name, value in result.items()}, step=boundary)
                bar.set_postfix(score=f"{np.mean([score_of(r) for r in last_eval]):.1f}", ups=f"{length / elapsed:.0f}")
            if boundary % checkpoint_interval == 0 or boundary == steps:
                timing = run_timing(prior, train_seconds, run_started)
                for index, checkpointer in enumerate(checkpointers):
                    checkpointer.save(boundary, seed_slice(state, index), score_of(last_eval[index]) if evaluated else None, timing)
            if stop_after is not None and updates_done >= stop_after:
                return {}
        if last_eval is None or int(state.step[0]) != steps:
            last_eval = evaluate(steps)
        timing = summary_timing(steps, run_timing(prior, train_seconds, run_started))
        summaries = [{**member.combination, **result, **timing, "seed": member.seed}
                     for result, member in zip(last_eval, members)]
        for directory, summary, logger in zip(seed_dirs, summaries, loggers):
            ckpt.write_json_atomic(directory / "summary.json", summary)
            logger.summary(summary)
        per_combination = []
        num_seeds = int(config["num_seeds"])
        for start, combination in zip(range(0, len(members), num_seeds), combinations(grid)):
            seed_summaries = summaries[start:start + num_seeds]
            if num_seeds == 1:
                per_combination.append(seed_summaries[0])
                continue
            combined = {**combination, **aggregate_over_seeds(seed_summaries), **timing, "seeds": seed_summaries}
            ckpt.write_json_atomic(members[start].directory.parent / "summary.json", combined)
            per_combination.append(combined)
        if not grid:
            return per_combination[0]
        summary = {"vmap": grid, **timing, "combinations": per_combination}
        ckpt.write_json_atomic(run_dir / "summary.json", summary)
        return summary
    finally:
        bar.close()
        for checkpointer in checkpointers:
            checkpointer.close()
        eval_envs.close()
        for logger in loggers:
            logger.close()


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
        return replace(build_experiment(config), config=config)
    return Experiment(config, agent_cls, agent_defaults, spec, transitions=None)


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
        from offrl.online import example_batch

        rows = example_batch(experiment.spec)
    else:
        rows = experiment.transitions[: max(256, int(config.get("num_tokens", 0)))].as_dict()
    abstract_state = jax.eval_shape(lambda: experiment.initial_state(rows))
    return ckpt.restore(manager_dir, step, abstract_state), experiment, step
