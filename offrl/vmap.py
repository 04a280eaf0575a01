"""Hyperparameters as a batch axis: `--vmap expectile=0.6,0.7,0.8,0.9` trains one run per
value (times `--num-seeds`) in one compiled program, the way seeds are batched.

The keys that can be batched are those the agent's config declares `option(..., batchable=True)`:
numbers that are arrays in its state (the config's leaves, learning rates in the optimizer
state), so changing them changes neither a shape nor the code. Everything else (network
sizes, the extraction method, the batch size, run settings) would need another program and
is refused.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from offrl.config import ConfigError, _coerce, batchable_keys, parse_yaml

RUN_KEYS_ADVICE = {
    "seed": "seeds are batched with --num-seeds K",
    "num_seeds": "seeds are batched with --num-seeds K",
}


def parse_vmap(value: Any) -> dict[str, list[Any]]:
    """`expectile=0.6,0.7,temperature=1,3` (a value without `=` belongs to the key before it)
    or a mapping {key: [values]} (a YAML config) -> {key: [values]}, keys in the given order."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, dict):
        grid = {str(key).replace("-", "_"): list(values) if isinstance(values, (list, tuple)) else [values]
                for key, values in value.items()}
    elif isinstance(value, str):
        grid: dict[str, list[Any]] = {}
        key = None
        for token in (part.strip() for part in value.split(",")):
            if "=" in token:
                key, _, token = token.partition("=")
                key = key.strip().lstrip("-").replace("-", "_")
                if not key:
                    raise ConfigError(f"--vmap {value!r}: a '=' without a key name")
                if key in grid:
                    raise ConfigError(f"--vmap {value!r}: key {key!r} is given twice")
                grid[key] = []
            elif key is None:
                raise ConfigError(f"--vmap {value!r}: expected KEY=V1,V2,... (e.g. expectile=0.6,0.7,0.8)")
            if token:
                grid[key].append(parse_yaml(token))
    else:
        raise ConfigError(f"--vmap expects KEY=V1,V2,... or a mapping of keys to value lists, got {value!r}")
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--vmap {key}: no values given (expected {key}=V1,V2,...)")
    return grid


def format_vmap(grid: dict[str, list[Any]]) -> str:
    """The command-line form `parse_vmap` reads back."""
    return ",".join(f"{key}={','.join(str(value) for value in values)}" for key, values in grid.items())


def check_vmap(grid: dict[str, list[Any]], config: dict[str, Any], agent_cls: type) -> dict[str, list[Any]]:
    """The grid with values coerced to the keys' types; a ConfigError names the first key
    that cannot be batched and says why."""
    if not grid:
        return {}
    if getattr(agent_cls, "online", False):
        # Each member would need envs and a buffer of its own; only seeds get them.
        raise ConfigError(f"--vmap is for offline agents; sweep {config['agent']}'s hyperparameters as separate runs")
    batchable = batchable_keys(agent_cls.config_class)
    if not batchable:
        raise ConfigError(
            f"--vmap: agent {config['agent']} has no batchable hyperparameters; sweep it as separate runs (scripts/sweep.py)"
        )
    checked = {}
    for key, values in grid.items():
        if key not in config:
            raise ConfigError(f"--vmap {key}: unknown config key; batchable keys of {config['agent']}: {', '.join(batchable)}")
        if key in RUN_KEYS_ADVICE:
            raise ConfigError(f"--vmap {key}: {RUN_KEYS_ADVICE[key]}")
        if key not in batchable:
            raise ConfigError(
                f"--vmap {key}: changes shapes or the code path (or is a run setting), which one compiled program "
                f"cannot vary; run its values as separate runs. Batchable keys of {config['agent']}: {', '.join(batchable)}"
            )
        coerced = [_coerce(key, value, config[key]) for value in values]
        if len(set(coerced)) != len(coerced):
            raise ConfigError(f"--vmap {key}: a value is repeated in {values}")
        checked[key] = coerced
    return checked


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, first key slowest; [{}] for no grid (one plain run)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def combination_name(combination: dict[str, Any]) -> str:
    """`expectile=0.6_temperature=3`: the directory (and W&B name part) of one combination."""
    parts = []
    for key, value in combination.items():
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9.+-]+', '-', str(value))}")
    return "_".join(parts)
