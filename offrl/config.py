"""Configuration: defaults < agent defaults < preset YAML < --config FILE < command line.

One flat namespace holds the run settings (`RUN_DEFAULTS`) and the agent's
hyperparameters (its `DEFAULT_CONFIG`); `wandb.*` keys form the only nested group.
Command-line overrides are `--key value` or `--key=value` (what `wandb agent` passes),
dashes and underscores alike, `--no-key` for a false boolean. Values are parsed as YAML
and must match the type of the default they replace, so typos fail loudly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_DATASET = "offrl/maze2d/umaze-v0"

RUN_DEFAULTS: dict[str, Any] = {
    "agent": "iql-ddpg",
    "dataset": None,  # offline agents; None means DEFAULT_DATASET
    "env": None,  # online agents (a gymnasium id); for offline agents, an evaluation env override
    "seed": 0,
    "num_seeds": 1,  # seeds seed, seed+1, ... trained together (vmapped, sharded over devices)
    "steps": 100_000,  # gradient updates
    "run_dir": None,  # default runs/<agent>/<dataset>/<seed>-<time>
    "resume": None,
    "normalize_observations": False,
    "updates_per_call": 1000,  # updates fused into one jitted lax.scan; also the logging interval
    "eval_interval": None,  # None: every 10% of training
    "eval_episodes": 50,
    "eval_deterministic": True,
    "checkpoint_interval": None,  # None: at every evaluation
    "keep_checkpoints": 3,
    "example_batch_size": 100_000,  # rows the agent's create() sees (tokenizer fitting)
    "wandb": {
        "mode": None,  # online | offline | disabled; None: online if logged in, else offline
        "project": "offrl",
        "entity": None,
        "group": None,
        "name": None,
        "tags": [],
    },
}


class ConfigError(ValueError):
    pass


def _normalize_key(key: str) -> str:
    return key.replace("-", "_")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of `default`; ints widen to floats, lists to tuples."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, (tuple, list)):
        if isinstance(value, str):
            value = [yaml.safe_load(part) for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return type(default)(value)
        if isinstance(value, (int, float)):
            return type(default)([value])
    elif isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    raise ConfigError(f"config key {key!r} expects {type(default).__name__}, got {value!r}")


def set_key(config: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b` style keys in place; unknown keys are errors that list the valid ones."""
    parts = [_normalize_key(part) for part in dotted_key.split(".")]
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config group {part!r}; valid keys: {', '.join(valid_keys(config))}")
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError(f"unknown config key {dotted_key!r}; valid keys: {', '.join(valid_keys(config))}")
    if isinstance(node[leaf], dict) and isinstance(value, dict):
        for key, sub_value in value.items():
            set_key(config, f"{'.'.join(parts)}.{key}", sub_value)
        return
    node[leaf] = _coerce(dotted_key, value, node[leaf])


def valid_keys(config: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, dict):
            keys.extend(valid_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


def merge(config: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    for key, value in overrides.items():
        try:
            set_key(config, key, value)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def parse_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and `--no-key` into {key: parsed value}, in order."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: options look like --key value or --key=value")
        body = token[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, raw = body, argv[i + 1]
            i += 2
        elif body.startswith("no-") or body.startswith("no_"):
            key, raw = body[3:], "false"
            i += 1
        else:
            key, raw = body, "true"
            i += 1
        overrides[_normalize_key(key)] = yaml.safe_load(raw) if raw != "" else ""
    return overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return content


def preset_paths(agent_family: str, data_family: str) -> list[Path]:
    """Presets that apply, general first: configs/<agent family>/<dataset or env family>.yaml."""
    path = CONFIG_DIR / agent_family / f"{data_family}.yaml"
    return [path] if path.is_file() else []


def base_config(agent_defaults: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(RUN_DEFAULTS)
    clash = set(agent_defaults) & set(config)
    if clash:
        raise ConfigError(f"agent config keys {sorted(clash)} clash with run settings")
    config.update(copy.deepcopy(agent_defaults))
    return config


def agent_config(config: dict[str, Any], agent_defaults: dict[str, Any]) -> dict[str, Any]:
    """The agent's hyperparameters out of the resolved config, plus the run length."""
    values = {key: config[key] for key in agent_defaults}
    if "max_steps" in values:
        values["max_steps"] = config["steps"]
    return values


def to_json(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True, default=list)
