"""Configuration: defaults < agent defaults < preset YAML < --config FILE < command line.

One flat namespace holds the run settings (`RUN_DEFAULTS`) and the agent's
hyperparameters (its `DEFAULT_CONFIG`); `wandb.*` keys form the only nested group.
Command-line overrides are `--key value` or `--key=value` (what `wandb agent` passes),
dashes and underscores alike, `--no-key` for a false boolean. Values are parsed as YAML
(with YAML 1.2 floats, so `3e-4` is a number) and must match the type of the default they
replace, so typos fail loudly. `validate` then checks the ranges of the resolved config
(positive counts, learning rates, known choices) before anything is created on disk.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_DATASET = "offrl/maze2d/umaze-v0"

def option(default: Any, doc: str, *, derive: Callable[[dict[str, Any], Any], Any] | None = None) -> Any:
    """A config dataclass field with its one line of doc, which `--help` prints.

    `derive(run_config, spec)`: the field is derived, computed from the resolved run settings
    and the run's `DatasetSpec` (its env) whenever an experiment is built (`derived_values`),
    so giving it has no effect and `--help` marks it. Lists, other unhashable defaults and
    nested config groups get a `default_factory` of copies, so no two configs share a mutable
    default."""
    metadata = {"doc": doc, "derived": derive is not None, "derive": derive}
    if type(default).__hash__ is None or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def run_steps(config: dict[str, Any], spec: Any) -> int:
    """A `derive` hook: the run's number of updates (--steps), e.g. for a schedule's length."""
    return int(config["steps"])


def derived_values(config_class: type, config: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The keys `config_class` derives (`option(derive=...)`), from the run settings in
    `config` and the run's `DatasetSpec`."""
    return {
        field.name: field.metadata["derive"](config, spec)
        for field in dataclasses.fields(config_class)
        if field.metadata.get("derive") is not None
    }


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """The `wandb.*` group: where runs are logged on Weights & Biases."""

    mode: str | None = option(None, "online | offline | disabled; null: online if logged in, else offline")
    project: str = option("offrl", "W&B project")
    entity: str | None = option(None, "W&B entity (user or team); null: your default entity")
    group: str | None = option(None, "W&B group, e.g. to gather a sweep's seeds")
    name: str | None = option(None, "W&B run name; null: the run directory's name")
    tags: list[str] = option([], "W&B tags, comma-separated")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Run settings, shared by every agent (the agent's hyperparameters are its own config class)."""

    agent: str = option("iql-ddpg", "the agent to train (see agents above)")
    dataset: str | None = option(None, f"offline agents: a dataset id or .hdf5 file; null means {DEFAULT_DATASET}")
    env: str | None = option(None, "online agents: a gymnasium id; offline agents: an evaluation env override")
    d4rl_reward: str = option("auto", "D4RL .hdf5 rewards: auto (by exact D4RL id) | none | locomotion | antmaze")
    seed: int = option(0, "seed of the run (the first seed with num_seeds > 1)")
    num_seeds: int = option(1, "seeds seed, seed+1, ... trained together (vmapped, sharded over devices)")
    vmap: str | None = option(
        None, "e.g. expectile=0.6,0.7: one run per value (x seeds) in one compiled program (offrl/vmap.py)"
    )
    steps: int = option(100_000, "gradient updates; with --resume, extends the run to this many")
    run_dir: str | None = option(None, "where the run is written; null: runs/<agent>/<dataset>/<seed>-<time>")
    resume: str | None = option(None, "a run directory to continue from its latest checkpoint")
    normalize_observations: bool = option(False, "standardize observations by the dataset's per-dim mean and std")
    reward_shift: float = option(
        0.0, "added to every dataset reward before training, not to the evaluation's return (maze2d -1: rewards -1 / 0)"
    )
    updates_per_call: int = option(1000, "updates fused into one jitted lax.scan; also the logging interval")
    eval_interval: int | None = option(None, "updates between evaluations; null: every 10% of training")
    eval_episodes: int = option(50, "episodes per evaluation")
    eval_deterministic: bool = option(True, "evaluate the policy's deterministic action, not a sampled one")
    checkpoint_interval: int | None = option(None, "updates between checkpoints; null: at every evaluation")
    keep_checkpoints: int = option(3, "latest checkpoints kept (the best by score is kept as well)")
    example_batch_size: int = option(100_000, "dataset rows the agent's create() sees (tokenizer fitting)")
    wandb: WandbConfig = option(WandbConfig(), "Weights & Biases logging (the wandb.* keys)")


# The rest of offrl reads the run settings as a flat dict (plus the nested `wandb` group).
RUN_DEFAULTS: dict[str, Any] = dataclasses.asdict(RunConfig())


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key as `--help` lists it."""

    key: str  # dotted for a nested group's keys, e.g. wandb.mode
    type: str  # the field's annotation as written
    default: Any
    doc: str
    derived: bool


def describe(config_class: type, defaults: dict[str, Any] | None = None, prefix: str = "") -> list[KeyDoc]:
    """Every key of a config dataclass in declaration order, a nested dataclass's keys as
    `group.key`. `defaults` (e.g. with an agent's registry overrides) replaces the class's
    defaults. A field without a doc is a ConfigError: --help must be able to explain every key."""
    defaults = dataclasses.asdict(config_class()) if defaults is None else defaults
    keys = []
    for field in dataclasses.fields(config_class):
        doc = str(field.metadata.get("doc", "")).strip()
        if not doc:
            raise ConfigError(
                f"config key {prefix}{field.name!r} of {config_class.__name__} has no doc: "
                "declare it with offrl.config.option(default, doc)"
            )
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        if dataclasses.is_dataclass(default):
            keys.extend(describe(type(default), defaults[field.name], f"{prefix}{field.name}."))
            continue
        keys.append(KeyDoc(f"{prefix}{field.name}", str(field.type), defaults[field.name], doc, field.metadata.get("derived", False)))
    return keys


def format_value(value: Any) -> str:
    """A value as it would be typed on the command line (YAML: null, true, .inf; lists comma-separated)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(item) for item in value) if value else "[]"
    if value == "":
        return '""'
    return str(value)


def help_line(key: KeyDoc) -> str:
    """`--key TYPE (default D): doc`, with `derived` for keys computed from the run (`option(derive=...)`)."""
    derived = ", derived" if key.derived else ""
    return f"  --{key.key} {key.type} (default {format_value(key.default)}{derived}): {key.doc}"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: PyYAML implements YAML 1.1, where a float
    needs a dot, so `3e-4` or `1e5` would be read as strings and rejected for a float key."""


_FLOAT_1_2 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """YAML as the config reads it (see `_Loader`); integers stay integers."""
    return yaml.load(text, Loader=_Loader)


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
            value = [parse_yaml(part) for part in value.split(",") if part.strip()]
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


# Range rules for the resolved config, by key; a key a config does not have is skipped, so
# one table serves every agent. Agents still check what needs the data (e.g. dims vs obs).
POSITIVE_INTS = (
    "num_seeds", "steps", "updates_per_call", "eval_episodes", "keep_checkpoints", "example_batch_size",
    "batch_size", "z_dim", "hidden_dim", "feature_dim", "backward_hidden_dim", "bilinear_rank",
    "num_tokens", "num_bins", "kmeans_iterations", "decay_steps", "episodes_per_update",
)
OPTIONAL_POSITIVE_INTS = ("eval_interval", "checkpoint_interval", "discrete_actions")
NON_NEGATIVE_INTS = ("seed", "num_actions")
POSITIVE_FLOATS = ("actor_lr", "critic_lr", "value_lr", "learning_rate", "temperature")
UNBOUNDED_POSITIVE_FLOATS = ("max_weight",)  # inf: no clipping of the AWR weights
NON_NEGATIVE_FLOATS = ("learning_rate_end", "bc_weight", "entropy_coef", "ortho_coef", "actor_noise", "actor_noise_clip")
UNIT_INTERVAL = ("discount", "gamma", "tau", "mix_ratio", "exploration_epsilon")  # [0, 1]
OPEN_UNIT_INTERVAL = ("expectile",)  # (0, 1)
POSITIVE_INT_LISTS = ("hidden_dims",)
CHOICES: dict[str, tuple[Any, ...]] = {
    "extraction": ("awr", "ddpg", "dawr"),
    "policy_head": ("gaussian", "deterministic"),
    "actor_lr_schedule": ("cosine", "constant"),
    "eval_squash": ("tanh", "clip"),
    "tokenizer": ("kmeans", "bins"),
    "action_squash": ("clip", "tanh"),
    "convention": ("current", "next"),
    "target_action": ("target", "online"),
    "target_heads": ("min", "mean"),
    "forward_arch": ("concat", "bilinear"),
    "d4rl_reward": ("auto", "none", "locomotion", "antmaze"),
    "wandb.mode": (None, "online", "offline", "disabled", "dryrun"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _lookup(config: dict[str, Any], dotted_key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate(config: dict[str, Any]) -> None:
    """Check every key's range in a resolved config; a ConfigError names the first bad key.

    Called before a run creates its directory, so a rejected run leaves nothing behind."""

    def check(keys: Sequence[str], ok: Any, expected: str) -> None:
        for key in keys:
            present, value = _lookup(config, key)
            if present and not ok(value):
                raise ConfigError(f"config key {key!r} must be {expected}, got {value!r} (--{key.replace('_', '-')} VALUE)")

    check(POSITIVE_INTS, lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    check(OPTIONAL_POSITIVE_INTS, lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null")
    check(NON_NEGATIVE_INTS, lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    check(POSITIVE_FLOATS, lambda v: _is_number(v) and v > 0, "a number > 0")
    check(UNBOUNDED_POSITIVE_FLOATS, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0")
    check(NON_NEGATIVE_FLOATS, lambda v: _is_number(v) and v >= 0, "a number >= 0")
    check(UNIT_INTERVAL, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
    check(OPEN_UNIT_INTERVAL, lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1")
    check(
        POSITIVE_INT_LISTS,
        lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 1 for x in v),
        "a list of integers >= 1, e.g. 256,256 ([] for a linear network)",
    )
    for key, choices in CHOICES.items():
        check([key], lambda v, choices=choices: v in choices, f"one of {', '.join(map(str, choices))}")


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
        overrides[_normalize_key(key)] = parse_yaml(raw) if raw != "" else ""
    return overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return content


def preset_paths(agent_family: str, data_family: str) -> list[Path]:
    """Presets that apply, general first: offrl/presets/<agent family>/<dataset or env family>.yaml."""
    path = PRESET_DIR / agent_family / f"{data_family}.yaml"
    return [path] if path.is_file() else []


def base_config(agent_defaults: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(RUN_DEFAULTS)
    clash = set(agent_defaults) & set(config)
    if clash:
        raise ConfigError(f"agent config keys {sorted(clash)} clash with run settings")
    config.update(copy.deepcopy(agent_defaults))
    return config


def agent_config(config: dict[str, Any], agent_defaults: dict[str, Any]) -> dict[str, Any]:
    """The agent's hyperparameters out of an experiment's config (derived keys included)."""
    return {key: config[key] for key in agent_defaults}


def to_json(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True, default=list)
