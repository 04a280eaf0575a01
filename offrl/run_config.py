"""Config resolution: a run's config from defaults, presets, --config FILE and the command
line (`resolve_config`), or from a saved run directory for --resume (`resume_config`).

The keys, their parsing and their checks are `offrl.config`, which every agent module
imports for `option`. Resolution lives here instead, because it needs the agent registry
(`agents`, which imports the agent modules) and the saved run directory
(`offrl.checkpoint`): in `offrl.config` it would make the config module import the agents
that import it, and give every agent import orbax.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from offrl.agents import agent_config_class, get_agent
from offrl import checkpoint as ckpt
from offrl import config as cfg


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
    cfg.validate(config, agent_config_class(agent_name))
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
    cfg.validate(config, agent_config_class(config["agent"]))
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


def derived_keys(config: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The keys `config`'s agent derives (`option(derive=...)`), computed from `config` and the
    run's `DatasetSpec`."""
    return cfg.derived_values(agent_config_class(config["agent"]), config, spec)


def with_derived(config: dict[str, Any], spec: Any) -> dict[str, Any]:
    """`config` with its agent's derived keys computed anew: what a built or restored
    experiment trains and evaluates with, whatever values of them `config` holds."""
    return {**config, **derived_keys(config, spec)}


def _data_family(dataset: str, d4rl_reward: str) -> str:
    from offrl.data import dataset_family

    return dataset_family(dataset, d4rl_reward)
