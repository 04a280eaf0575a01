"""Resolve once: `resolve(overrides)` turns the command line into one immutable `Experiment`.

Layers, later wins: the run defaults < the agent's config class (and its registry line) <
the preset of its data family < --config FILE < the command line. With --resume the run's
saved config is the base instead, and only the keys in `RESUME_SAFE_KEYS` may change. Every
value is checked against its `option(...)` declaration here, every --vmap combination too,
the run directory is decided and the batch's members (seeds x --vmap combinations) are laid
out, all before anything exists on disk. `offrl.runner.run` then carries it out, first
adding its data and the keys derived from it (`load_data`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from offrl import checkpoint as ckpt
from offrl import config as cfg
from offrl.agents import agent_class, get_agent
from offrl.envs.spec import DatasetSpec
from offrl.loop import LoopState
from offrl.members import Member, batch_members, frozen
from offrl.transitions import Transitions
from offrl.vmap import check_vmap, combinations, parse_vmap

# Keys a resumed run may change: they decide how long it trains and when it evaluates,
# checkpoints and logs, not what an update computes. (`steps` also sets the length of a
# learning-rate schedule that depends on it, which the runner points out on resume.)
RESUME_SAFE_KEYS = (
    "steps", "eval_interval", "eval_episodes", "eval_deterministic", "checkpoint_interval", "keep_checkpoints",
    "updates_per_call", "wandb",
)


@dataclasses.dataclass(frozen=True)
class Experiment(Mapping):
    """Everything a run or an evaluation needs. Read as a mapping, it is the resolved flat
    config (run settings and agent keys), as saved in config.json."""

    config: Mapping[str, Any]
    agent_cls: type
    grid: Mapping[str, list[Any]] = dataclasses.field(default_factory=dict)  # --vmap key -> values
    members: tuple[Member, ...] = ()
    spec: DatasetSpec | None = None  # with the transitions, from `load_data`
    transitions: Transitions | None = None

    def __getitem__(self, key: str) -> Any:
        return self.config[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.config)

    def __len__(self) -> int:
        return len(self.config)

    @property
    def online(self) -> bool:
        return bool(getattr(self.agent_cls, "online", False))

    def initial_state(
        self, example_batch: dict[str, np.ndarray], seed: int | None = None, config: Mapping[str, Any] | None = None
    ) -> LoopState:
        """A fresh loop state; `config` (default the experiment's) gives the hyperparameters, e.g. a member's."""
        config = self.config if config is None else config
        seed = config["seed"] if seed is None else seed
        init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
        agent = self.agent_cls.create(cfg.from_flat(self.agent_cls.config_class, config), example_batch, init_key)
        state = LoopState.initial(agent, loop_key, example_batch["observations"].shape[-1])
        # Python scalars (config leaves, optimizer step counters) become arrays, as they are after
        # any update, so a fresh state and a restored one have the same structure.
        return jax.tree_util.tree_map(jnp.asarray, state)


def resolve(overrides: Mapping[str, Any]) -> Experiment:
    """The one resolution of a run: layers (or a resume), checks, run directory and members."""
    overrides = dict(overrides)
    if overrides.get("resume"):
        config = resume_config(overrides.pop("resume"), overrides)
    else:
        config = layered_config(overrides)
        config["run_dir"] = str(config["run_dir"] or default_run_dir(config))
    agent_cls = agent_class(config["agent"])
    grid = check_vmap(parse_vmap(config.get("vmap")), config, agent_cls)
    for combination in combinations(grid):
        cfg.validate({**config, **combination}, agent_cls.config_class)
    return Experiment(frozen(config), agent_cls, grid, batch_members(config, grid))


def layered_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults < agent defaults < preset < --config FILE < command line, checked."""
    from offrl.data import dataset_family

    agent_name = overrides.get("agent", cfg.RUN_DEFAULTS["agent"])
    agent_cls, agent_defaults = get_agent(agent_name)
    config = cfg.base_config(agent_defaults)
    config["agent"] = agent_name
    dataset = overrides.get("dataset") or config["dataset"]
    env = overrides.get("env")
    if dataset is None and env is None:
        dataset = cfg.DEFAULT_DATASET
    family = dataset_family(dataset, overrides.get("d4rl_reward", "auto")) if dataset is not None else str(env)
    for path in cfg.preset_paths(agent_name.split("-")[0], family):
        cfg.merge(config, cfg.load_yaml(path), str(path))
    file_path = overrides.pop("config", None)
    if file_path:
        cfg.merge(config, cfg.load_yaml(file_path), str(file_path))
    cfg.merge(config, overrides, "command line")
    config["dataset"] = dataset
    cfg.validate(config, agent_cls.config_class)
    return config


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The saved config of `run_dir` with `overrides` applied: a key in `RESUME_SAFE_KEYS`
    takes its new value, a key given with the run's own value is fine, and any other change
    is a ConfigError naming the key (it would silently not be the run it claims to be)."""
    run_dir = Path(run_dir)
    saved = ckpt.load_config(run_dir)
    ckpt.check_resumable(run_dir)
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
    cfg.validate(config, agent_class(config["agent"]).config_class)
    return config


def default_run_dir(config: Mapping[str, Any]) -> Path:
    slug = str(config["dataset"] or config["env"]).replace("/", "_").replace(".hdf5", "")
    return Path("runs") / config["agent"] / slug / f"s{config['seed']}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_data(experiment: Experiment) -> Experiment:
    """The experiment with its data (an offline agent's dataset, loaded or built on first use;
    an online agent's env) and the keys its agent derives from them."""
    from offrl.data import load_dataset
    from offrl.online import online_spec

    config = experiment.config
    if experiment.online:
        transitions, spec = None, online_spec(config)
    else:
        transitions, spec = load_dataset(config["dataset"], env_id=config.get("env"), d4rl_reward=config.get("d4rl_reward", "auto"))
    return with_data(experiment, spec, transitions)


def with_data(experiment: Experiment, spec: DatasetSpec, transitions: Transitions | None) -> Experiment:
    derived = cfg.derived_values(experiment.agent_cls.config_class, experiment.config, spec)
    members = tuple(
        dataclasses.replace(
            member, config=frozen({**member.config, **derived}),
            combination_config=None if member.combination_config is None else frozen({**member.combination_config, **derived}),
        )
        for member in experiment.members
    )
    return dataclasses.replace(
        experiment, config=frozen({**experiment.config, **derived}), members=members, spec=spec, transitions=transitions
    )


def restore_run(path: str | Path, which: str = "latest", data: bool = True) -> tuple[LoopState, Experiment, int]:
    """The saved loop state of a run directory or checkpoint, on this machine's device.

    With `data=False` it needs only the run directory: the agent is rebuilt from the config
    and input shapes saved with the checkpoint, the evaluation env from its stored
    description, and the experiment has no transitions. With `data=True` (for analyses
    over the dataset) an offline run's dataset is loaded too."""
    manager_dir, step = ckpt.find_checkpoint(path, which)
    run_dir = ckpt.run_dir_of(manager_dir)
    meta = ckpt.read_meta(manager_dir, step)
    experiment = experiment_from_meta(meta, run_dir)
    if data and experiment.config.get("dataset") and not experiment.online:
        experiment = dataclasses.replace(experiment, transitions=load_data(experiment).transitions)
    abstract_state = jax.eval_shape(lambda: experiment.initial_state(ckpt.zeros_batch(meta["example_batch"])))
    return ckpt.restore(manager_dir, step, abstract_state), experiment, step


def experiment_from_meta(meta: dict[str, Any], run_dir: Path) -> Experiment:
    """The experiment a checkpoint's meta describes, without its dataset (see `restore_run`).

    Agent keys added since the run was saved take their current defaults; `run_dir` is where
    the run is now (it may have been copied since)."""
    agent_cls, agent_defaults = get_agent(meta["agent"])
    experiment = Experiment(frozen({**agent_defaults, **meta["config"], "run_dir": str(run_dir)}), agent_cls)
    spec = ckpt.spec_from_record(meta["env"])
    if spec is None:  # an env not storable as JSON: rebuilt from the dataset, as before
        return load_data(experiment)
    return with_data(experiment, spec, transitions=None)

