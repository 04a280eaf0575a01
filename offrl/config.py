"""Configuration: defaults < agent defaults < preset YAML < --config FILE < command line.

One flat namespace holds the run settings (`RUN_DEFAULTS`) and the agent's
hyperparameters (its `DEFAULT_CONFIG`); `wandb.*` keys form the only nested group.
Command-line overrides are `--key value` or `--key=value` (what `wandb agent` passes),
dashes and underscores alike, `--no-key` for a false boolean. Values are parsed as YAML
(with YAML 1.2 floats, so `3e-4` is a number) and must match the type of the default they
replace, so typos fail loudly. Every key is declared once, with `option(...)` in a config
class (`RunConfig` here, each agent's beside its code): its type, doc, range or choices and
whether `--vmap` may batch it. Validation (`validate`, `check_fields`), `--help`
(`describe`) and `--vmap` (`batchable_keys`) read those declarations; nothing keys on names.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_DATASET = "offrl/maze2d/umaze-v0"


class ConfigError(ValueError):
    pass


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


def option(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    batchable: bool = False,
    derive: Callable[[dict[str, Any], Any], Any] | None = None,
) -> Any:
    """A config field and all that is known of it: its doc (what `--help` prints), its range
    (`ge`/`gt`/`le`/`lt` a bound; a list's items each) or `choices`, and `batchable`: a pytree
    leaf of the agent's config (`config_class`), so one compiled update serves every value and
    `--vmap` may batch it (numbers that change no shape or code path). Validation, `--help`,
    `--vmap` and the sweep runner read these and nothing else. `derive(run_config, spec)`
    computes the field from the run (`derived_values`); giving it has no effect. Unhashable
    defaults and nested groups get a `default_factory` of copies."""
    if batchable and not _is_number(default):
        raise ConfigError(f"option({default!r}, {doc!r}): only numbers can be batched by --vmap")
    metadata = {
        "doc": doc, "derived": derive is not None, "derive": derive, "bounds": (ge, gt, le, lt),
        "choices": None if choices is None else tuple(choices), "batchable": batchable,
        "pytree_node": batchable,  # flax.struct: batchable fields are leaves, the rest static
    }
    if type(default).__hash__ is None or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def config_class(cls: type) -> type:
    """Make `cls` a config: a frozen dataclass and a pytree (flax.struct) whose `batchable`
    fields are leaves and whose other fields are static, so an agent that keeps its config as
    a pytree field reads every value as `self.config.name`, batched or not. Constructing one
    with Python values checks each field against its declaration (a ConfigError naming the
    key); lists given for tuple fields become tuples, so static fields stay hashable."""
    def __post_init__(self: Any) -> None:
        for field in dataclasses.fields(self):
            if str(field.type).startswith("tuple"):
                object.__setattr__(self, field.name, _as_tuple(getattr(self, field.name)))
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        # JAX and orbax rebuild configs with other leaves (tracers, arrays, None): only a
        # config of Python numbers is one being declared, and checked.
        if all(_is_number(values[key]) for key in batchable_keys(type(self))):
            check_fields(type(self), values)

    cls.__post_init__ = __post_init__  # before the dataclass is made, so its __init__ calls it
    cls.is_offrl_config = True
    return flax.struct.dataclass(cls)


def is_config(node: Any) -> bool:
    """Whether `node` is an instance of a `config_class`."""
    return getattr(type(node), "is_offrl_config", False)


def _as_tuple(value: Any) -> Any:
    """A tuple field's value as a (nested) tuple, which static pytree fields need to be
    hashable: from a list, a single number, or a comma-separated string ("4,5", "[4, 5]";
    "" and "none" are null)."""
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        value = None if not text or text.lower() == "none" else [parse_yaml(part) for part in text.split(",") if part.strip()]
    if _is_number(value):
        return (value,)
    return tuple(_as_tuple(item) if isinstance(item, list) else item for item in value) if isinstance(value, (list, tuple)) else value


def batchable_keys(config_cls: type) -> tuple[str, ...]:
    """The keys of `config_cls` that `--vmap` may batch, as declared."""
    return tuple(field.name for field in dataclasses.fields(config_cls) if field.metadata.get("batchable"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range_text(bounds: tuple[Any, Any, Any, Any]) -> str:
    """`>= 1`, `> 0`, `in [0, 1]`, `strictly between 0 and 1`, `in [0, 1)`; "" without bounds."""
    ge, gt, le, lt = bounds
    low, high = (ge if gt is None else gt), (le if lt is None else lt)
    if low is not None and high is not None:
        if gt is not None and lt is not None:
            return f"strictly between {format_value(low)} and {format_value(high)}"
        return f"in {'[' if gt is None else '('}{format_value(low)}, {format_value(high)}{']' if lt is None else ')'}"
    if low is not None:
        return f"{'>=' if gt is None else '>'} {format_value(low)}"
    if high is not None:
        return f"{'<=' if lt is None else '<'} {format_value(high)}"
    return ""


def _in_range(value: Any, bounds: tuple[Any, Any, Any, Any]) -> bool:
    ge, gt, le, lt = bounds
    return not any([
        ge is not None and not value >= ge, gt is not None and not value > gt,
        le is not None and not value <= le, lt is not None and not value < lt,
    ])


def expectation(field: dataclasses.Field) -> tuple[Callable[[Any], bool], str] | None:
    """(test, what it expects in words) for a declared field; None when nothing is declared
    that a value could fail (free text, nested groups)."""
    annotation = str(field.type)
    nullable = annotation.endswith("| None")
    base = annotation.split("[")[0].split(" |")[0]
    choices, bounds = field.metadata.get("choices"), field.metadata.get("bounds", (None,) * 4)
    text = _range_text(bounds)
    if choices is not None:
        ok, expected = (lambda value: value in choices), f"one of {', '.join(map(format_value, choices))}"
    elif base in ("int", "float") and (text or base == "int"):
        is_kind = _is_int if base == "int" else _is_number
        ok = lambda value: is_kind(value) and _in_range(value, bounds)  # noqa: E731
        expected = f"{'an integer' if base == 'int' else 'a number'}{' ' + text if text else ''}"
    elif base in ("tuple", "list") and text:
        item = annotation.split("[")[1].split(",")[0].split("]")[0].strip()
        is_kind = _is_int if item == "int" else _is_number
        ok = lambda value: isinstance(value, (list, tuple)) and all(is_kind(x) and _in_range(x, bounds) for x in value)  # noqa: E731
        expected = f"a list of {'integers' if item == 'int' else 'numbers'} {text}"
    else:
        return None
    if nullable and choices is None:
        return (lambda value: value is None or ok(value)), f"{expected} or null"
    return ok, expected


def check_fields(config_cls: type, values: dict[str, Any], prefix: str = "") -> None:
    """Check each value in `values` (keys of `config_cls`, a nested group's as a dict or an
    instance) against its field's declaration; a ConfigError names the first bad key.
    Arrays (a batched field inside a jitted update) are not checked: they were, as numbers."""
    for field in dataclasses.fields(config_cls):
        if field.name not in values:
            continue
        value, key = values[field.name], f"{prefix}{field.name}"
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                check_fields(type(default), value, f"{key}.")
            continue
        test = expectation(field)
        if test is None or not isinstance(value, (int, float, str, list, tuple, type(None))):
            continue
        ok, expected = test
        if not ok(value):
            raise ConfigError(f"config key {key!r} must be {expected}, got {value!r} (--{key.replace('_', '-')} VALUE)")


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


@config_class
class WandbConfig:
    """The `wandb.*` group: where runs are logged on Weights & Biases."""

    mode: str | None = option(
        None, "null: online if logged in, else offline", choices=(None, "online", "offline", "disabled", "dryrun")
    )
    project: str = option("offrl", "W&B project")
    entity: str | None = option(None, "W&B entity (user or team); null: your default entity")
    group: str | None = option(None, "W&B group, e.g. to gather a sweep's seeds")
    name: str | None = option(None, "W&B run name; null: the run directory's name")
    tags: list[str] = option([], "W&B tags, comma-separated")


@config_class
class RunConfig:
    """Run settings, shared by every agent (the agent's hyperparameters are its own config class)."""

    agent: str = option("iql-ddpg", "the agent to train (see agents above)")
    dataset: str | None = option(None, f"offline agents: a dataset id or .hdf5 file; null means {DEFAULT_DATASET}")
    env: str | None = option(None, "online agents: a gymnasium id; offline agents: an evaluation env override")
    d4rl_reward: str = option(
        "auto", "D4RL .hdf5 rewards (auto: by exact D4RL id)", choices=("auto", "none", "locomotion", "antmaze")
    )
    seed: int = option(0, "seed of the run (the first seed with num_seeds > 1)", ge=0)
    num_seeds: int = option(1, "seeds seed, seed+1, ... trained together (vmapped, sharded over devices)", ge=1)
    vmap: str | None = option(
        None, "e.g. expectile=0.6,0.7: one run per value (x seeds) in one compiled program (offrl/vmap.py)"
    )
    steps: int = option(100_000, "gradient updates; with --resume, extends the run to this many", ge=1)
    run_dir: str | None = option(None, "where the run is written; null: runs/<agent>/<dataset>/<seed>-<time>")
    resume: str | None = option(None, "a run directory to continue from its latest checkpoint")
    normalize_observations: bool = option(False, "standardize observations by the dataset's per-dim mean and std")
    reward_shift: float = option(
        0.0, "added to every dataset reward before training, not to the evaluation's return (maze2d -1: rewards -1 / 0)"
    )
    updates_per_call: int = option(1000, "updates fused into one jitted lax.scan; also the logging interval", ge=1)
    eval_interval: int | None = option(None, "updates between evaluations; null: every 10% of training", ge=1)
    eval_episodes: int = option(50, "episodes per evaluation", ge=1)
    eval_deterministic: bool = option(True, "evaluate the policy's deterministic action, not a sampled one")
    checkpoint_interval: int | None = option(None, "updates between checkpoints; null: at every evaluation", ge=1)
    keep_checkpoints: int = option(3, "latest checkpoints kept (the best by score is kept as well)", ge=1)
    example_batch_size: int = option(100_000, "dataset rows the agent's create() sees (tokenizer fitting)", ge=1)
    wandb: WandbConfig = option(WandbConfig(), "Weights & Biases logging (the wandb.* keys)")


# The rest of offrl reads the run settings as a flat dict (plus the nested `wandb` group).
RUN_DEFAULTS: dict[str, Any] = dataclasses.asdict(RunConfig())


def validate(config: dict[str, Any], agent_config_cls: type) -> None:
    """Check a resolved flat config (run settings and the agent's keys) against the fields'
    declarations; a ConfigError names the first bad key. Run before a run creates its
    directory, so a rejected run leaves nothing behind."""
    check_fields(RunConfig, config)
    check_fields(agent_config_cls, dataclasses.asdict(from_flat(agent_config_cls, config)))  # after "4,5" -> (4, 5)


def from_flat(config_cls: type, config: Mapping[str, Any]) -> Any:
    """The typed config (e.g. what an agent's `create` receives) from a flat one; other keys are ignored."""
    return config_cls(**{field.name: config[field.name] for field in dataclasses.fields(config_cls) if field.name in config})


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key as `--help` lists it."""

    key: str  # dotted for a nested group's keys, e.g. wandb.mode
    type: str  # the field's annotation as written
    default: Any
    doc: str
    derived: bool
    allowed: str  # the declared range or choices in words ("" if any value of the type goes)
    batchable: bool


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
        choices = field.metadata.get("choices")
        allowed = f"one of {'|'.join(map(format_value, choices))}" if choices else _range_text(field.metadata["bounds"])
        keys.append(KeyDoc(
            f"{prefix}{field.name}", str(field.type), defaults[field.name], doc, field.metadata.get("derived", False),
            allowed, field.metadata.get("batchable", False),
        ))
    return keys


def help_line(key: KeyDoc) -> str:
    """`--key TYPE (default D, ALLOWED, vmap-able): doc`, with `derived` for keys computed from
    the run (`option(derive=...)`) and `vmap-able` for the keys `--vmap` may batch."""
    notes = [f"default {format_value(key.default)}", key.allowed, "derived" if key.derived else "",
             "vmap-able" if key.batchable else ""]
    return f"  --{key.key} {key.type} ({', '.join(note for note in notes if note)}): {key.doc}"


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


def to_json(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True, default=list)
