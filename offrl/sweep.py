"""W&B sweep files, run locally: expand grid / random sweeps and run them in worker processes.

The same `sweeps/*.yaml` drives `wandb sweep` + `wandb agent` (W&B's server
chooses the parameters) and `scripts/sweep.py` (no server: parameters are expanded
here). Both launch `scripts/train.py` with one `--key=value` per parameter, formatted
exactly as W&B's `${args}` macro does (`f"--{key}={value}"`), so a sweep that runs
offline also parses under `wandb agent`.

Each run writes into `OUT/runs/<name>`; a run counts as finished once its
`summary.json` exists, so an interrupted sweep rerun with the same command skips finished
runs, resumes half-done ones from their checkpoint (`--resume`) and retries the rest.

`fold_grid` (scripts/sweep.py --vmap) folds a grid's batchable axes (the keys the agent's
config declares `batchable`) and a consecutive seed axis into one `train.py --vmap ... --num-seeds K`
process per remaining combination: start-up, dataset load and compilation are paid once per
process instead of once per run. Each grid point is still its own run directory (a member of
its process, OUT/runs/<process>/<key=value...>/seed<N>) and its own row of results.csv.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from offrl.config import RUN_DEFAULTS, ConfigError, _coerce, load_yaml
from offrl.vmap import combination_name, format_vmap

SUMMARY_FIELDS = ("return_mean", "return_std", "normalized_score", "success_rate", "episodes", "steps",
                  "updates_per_second", "wall_seconds")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
ERROR_TAIL_LINES = 3


class SweepError(ValueError):
    pass


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a W&B sweep YAML and check the parts the local runner relies on."""
    try:
        sweep = load_yaml(path)
    except ConfigError as error:
        raise SweepError(str(error)) from None
    for key in ("program", "method", "parameters"):
        if key not in sweep:
            raise SweepError(f"sweep file {path} has no {key!r}")
    if not isinstance(sweep["parameters"], dict) or not sweep["parameters"]:
        raise SweepError(f"sweep file {path}: 'parameters' must map parameter names to specs")
    for name, spec in sweep["parameters"].items():
        if not isinstance(spec, dict):
            raise SweepError(f"parameter {name!r}: expected a mapping such as {{values: [...]}}, got {spec!r}")
    return sweep


def format_args(params: dict[str, Any]) -> list[str]:
    """What W&B's `${args}` becomes for these parameter values (wandb's create_sweep_command_args)."""
    return [f"--{key}={value}" for key, value in params.items()]


def swept_keys(sweep: dict[str, Any]) -> list[str]:
    """Parameters that vary between runs (a fixed `value` or a one-element `values` does not)."""
    return [name for name, spec in sweep["parameters"].items()
            if "value" not in spec and not ("values" in spec and len(spec["values"]) == 1)]


def expand(sweep: dict[str, Any], count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter sets a sweep runs, in a fixed order so reruns name the same runs alike.

    grid: every combination of `values` (and fixed `value`s), first parameter slowest.
    random: `count` independent draws (default the file's `run_cap`) from a generator
    seeded with `seed`. bayes needs W&B's server, which chooses each run from the results
    so far; there is no offline equivalent.
    """
    method = sweep["method"]
    parameters: dict[str, dict[str, Any]] = sweep["parameters"]
    if method == "grid":
        choices = []
        for name, spec in parameters.items():
            if "value" in spec:
                choices.append([spec["value"]])
            elif "values" in spec:
                choices.append(list(spec["values"]))
            else:
                raise SweepError(f"grid sweeps need 'values' or 'value' for every parameter; {name!r} has {spec}")
        return [dict(zip(parameters, combination)) for combination in itertools.product(*choices)]
    if method == "random":
        count = count if count is not None else sweep.get("run_cap")
        if not count or count < 1:
            raise SweepError("random sweeps need a run count: --count N (or run_cap in the sweep file)")
        rng = random.Random(seed)
        return [{name: sample(name, spec, rng) for name, spec in parameters.items()} for _ in range(count)]
    raise SweepError(f"method {method!r} cannot run offline (grid and random can); use wandb sweep + wandb agent")


def sample(name: str, spec: dict[str, Any], rng: random.Random) -> Any:
    """One draw of a parameter, with W&B's semantics for each distribution."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(list(spec["values"]))
    if "min" not in spec or "max" not in spec:
        raise SweepError(f"parameter {name!r} needs 'value', 'values' or 'min' and 'max': {spec}")
    low, high = spec["min"], spec["max"]
    # Like W&B: without a distribution, integer bounds mean int_uniform, otherwise uniform.
    distribution = spec.get("distribution", "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform")
    if distribution == "uniform":
        return rng.uniform(low, high)
    if distribution == "log_uniform_values":
        if low <= 0:
            raise SweepError(f"parameter {name!r}: log_uniform_values needs min > 0, got {low}")
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if distribution == "int_uniform":
        return rng.randint(int(low), int(high))
    if distribution == "q_uniform":
        q = spec.get("q", 1.0)
        return round(rng.uniform(low, high) / q) * q
    raise SweepError(f"parameter {name!r}: distribution {distribution!r} is not supported offline; "
                     f"supported: {', '.join(DISTRIBUTIONS)}")


def run_name(index: int, params: dict[str, Any], keys: list[str]) -> str:
    """`003-agent=iql-awr_dataset=umaze-v0_seed=0`: the index keeps names unique, the rest readable."""
    parts = []
    for key in keys:
        value = params[key]
        text = f"{value:.4g}" if isinstance(value, float) else str(value).rsplit("/", 1)[-1]
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9.=+-]+', '-', text)}")
    return f"{index:03d}-" + "_".join(parts)[:120] if parts else f"{index:03d}"


@dataclass
class RunSpec:
    name: str
    params: dict[str, Any]
    run_dir: Path
    # A folded process: the grid points it trains, each with its own run directory inside run_dir.
    members: list[RunSpec] = field(default_factory=list)


@dataclass
class RunResult:
    spec: RunSpec
    status: str  # finished | failed | interrupted
    started: str  # new | resumed | earlier (finished by a previous invocation)
    seconds: float | None = None
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def plan(sweep: dict[str, Any], out: Path, count: int | None = None, seed: int = 0,
         limit: int | None = None) -> list[RunSpec]:
    """The runs of a sweep with their names and run directories (`OUT/runs/<name>`)."""
    keys = swept_keys(sweep)
    runs = expand(sweep, count=count, seed=seed)[:limit]
    return [RunSpec(name, params, out / "runs" / name)
            for name, params in ((run_name(i, params, keys), params) for i, params in enumerate(runs))]


def _agent_info(agent: str) -> tuple[tuple[str, ...], dict[str, Any], bool]:
    """(batchable keys, default config, online) of a registered agent; an unknown agent batches
    nothing (its run fails with train.py's own error)."""
    from offrl.agents import get_agent
    from offrl.config import batchable_keys

    try:
        cls, defaults = get_agent(agent)
    except ValueError:
        return (), {}, True
    online = bool(getattr(cls, "online", False))
    return () if online else batchable_keys(cls.config_class), defaults, online


def fold_grid(sweep: dict[str, Any], out: Path, sets: dict[str, str], limit: int | None = None) -> list[RunSpec]:
    """One process per combination of the grid's axes that cannot be batched; see the module doc.

    An axis folds when every agent of the sweep can batch it; the seed axis folds when its
    values are consecutive integers (what --num-seeds trains) and no agent is online."""
    if sweep["method"] != "grid":
        raise SweepError(f"--vmap folds grid sweeps; this one is {sweep['method']!r}")
    points = expand(sweep)
    names = [run_name(i, params, swept_keys(sweep)) for i, params in enumerate(points)]
    agents = sorted({str(params.get("agent", sets.get("agent", RUN_DEFAULTS["agent"]))) for params in points})
    infos = {agent: _agent_info(agent) for agent in agents}
    swept = swept_keys(sweep)
    vmap_keys = [key for key in swept if key not in ("seed", "agent")
                 and all(key in infos[agent][0] for agent in agents)]
    seed_values = sorted({params["seed"] for params in points}) if "seed" in swept else []
    fold_seeds = (len(seed_values) > 1 and all(isinstance(v, int) for v in seed_values)
                  and seed_values == list(range(seed_values[0], seed_values[0] + len(seed_values)))
                  and not any(infos[agent][2] for agent in agents))
    folded = set(vmap_keys) | ({"seed"} if fold_seeds else set())
    remaining_swept = [key for key in swept if key not in folded]
    groups: dict[tuple, list[int]] = {}
    for index, params in enumerate(points):
        groups.setdefault(tuple(repr(params[key]) for key in params if key not in folded), []).append(index)
    processes = []
    for number, indices in enumerate(groups.values()):
        first = points[indices[0]]
        params = {key: value for key, value in first.items() if key not in folded}
        name = run_name(number, params, remaining_swept)
        run_dir = out / "runs" / name
        defaults = infos[str(first.get("agent", sets.get("agent", RUN_DEFAULTS["agent"])))][1]
        grid = {key: [] for key in vmap_keys}
        for index in indices:
            for key in vmap_keys:
                value = _coerce(key, points[index][key], defaults[key])
                if value not in grid[key]:
                    grid[key].append(value)
        if grid:
            params["vmap"] = format_vmap(grid)
        if fold_seeds:
            params.update(seed=seed_values[0], num_seeds=len(seed_values))
        members = []
        for index in indices:
            member_dir = run_dir
            if grid:
                member_dir = member_dir / combination_name({key: _coerce(key, points[index][key], defaults[key])
                                                            for key in vmap_keys})
            if fold_seeds:
                member_dir = member_dir / f"seed{points[index]['seed']}"
            members.append(RunSpec(names[index], points[index], member_dir))
        processes.append(RunSpec(name, params, run_dir, members))
    return processes[:limit]


def unfold(results: list[RunResult]) -> list[RunResult]:
    """One result per grid point: a folded process's members, each with its own summary (the
    process's status, time and error are shared by its members)."""
    out = []
    for result in results:
        if not result.spec.members:
            out.append(result)
            continue
        for member in result.spec.members:
            summary = read_summary(member.run_dir) if result.status == "finished" else None
            status = result.status if summary is not None or result.status != "finished" else "failed"
            error = result.error or ("" if summary is not None else f"no summary.json in {member.run_dir}")
            out.append(RunResult(member, status, result.started, result.seconds, error, summary or {}))
    return out


def parse_sets(sets: list[str]) -> dict[str, str]:
    """`--set key=value` pairs, values kept as text: train.py parses them like any override."""
    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SweepError(f"--set expects key=value, got {item!r}")
        parsed[key.lstrip("-")] = value
    return parsed


def build_command(sweep: dict[str, Any], spec: RunSpec, sets: dict[str, str], wandb_mode: str) -> list[str]:
    """The sweep's `command` with W&B's macros filled in, plus the run dir and `--set` overrides.

    A run with a checkpoint but no summary was interrupted: it continues with `--resume`,
    which restores its saved config, so no other override is passed.
    """
    program = Path(sweep["program"])  # like `wandb agent`: relative to the working directory
    if program.exists():
        program_args = [str(program.resolve())]
    elif program.stem == "train":  # e.g. scripts/train.py run from outside a checkout: the installed trainer
        program_args = ["-m", "offrl.cli.train"]
    else:
        raise SweepError(f"sweep program {program} does not exist (relative to {Path.cwd()}); run from the directory it is relative to")
    if has_checkpoint(spec):
        args = [f"--resume={spec.run_dir}"]
    else:
        args = [f"--wandb.mode={wandb_mode}", *format_args(spec.params),
                *(f"--{key}={value}" for key, value in sets.items()), f"--run_dir={spec.run_dir}"]
    macros = {"${interpreter}": [sys.executable], "${program}": program_args, "${args}": args}
    command = []
    for token in sweep.get("command", DEFAULT_COMMAND):
        if token == "${env}":
            continue  # W&B's `/usr/bin/env`; the subprocess inherits this environment anyway
        command.extend(macros.get(token, [token]))
    return command


def worker_environment() -> dict[str, str]:
    """This process's environment, with JAX told not to preallocate device memory: by default
    each JAX process claims 75% of a GPU, so a second worker on the same GPU would run out of
    memory. A user's own XLA_PYTHON_CLIENT_* settings win."""
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", **os.environ}


def has_checkpoint(spec: RunSpec | Path) -> bool:
    """A run, or every member of a folded process, saved a checkpoint (train.py resumes a batch
    only when all its members can)."""
    if isinstance(spec, RunSpec):
        if spec.members:
            return (spec.run_dir / "config.json").is_file() and all(has_checkpoint(m.run_dir) for m in spec.members)
        return has_checkpoint(spec.run_dir)
    run_dir = spec
    saved = run_dir / "checkpoints"  # checkpoints/<step>/ (offrl.checkpoint)
    return (run_dir / "config.json").is_file() and saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir())


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


class SweepRunner:
    """Runs a list of `RunSpec`s as train.py subprocesses, `workers` at a time, and records results."""

    def __init__(self, sweep: dict[str, Any], out: Path, workers: int, sets: dict[str, str], wandb_mode: str,
                 on_result: Callable[[RunResult, int, int], None] | None = None) -> None:
        self.sweep, self.out, self.workers = sweep, out, workers
        self.sets, self.wandb_mode, self.on_result = sets, wandb_mode, on_result
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run(self, specs: list[RunSpec]) -> list[RunResult]:
        """Every spec's result, in spec order; Ctrl-C stops the workers and marks open runs interrupted."""
        results: dict[str, RunResult] = {}
        pending = []
        for spec in specs:
            summary = read_summary(spec.run_dir)
            if summary is not None:
                results[spec.name] = RunResult(spec, "finished", "earlier", summary=summary)
            else:
                pending.append(spec)
        done = len(results)
        if self.on_result:
            for result in results.values():
                self.on_result(result, 0, len(specs))
        executor = ThreadPoolExecutor(max_workers=self.workers)
        futures = {executor.submit(self._run_one, spec): spec for spec in pending}
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result.spec.name] = result
                done += 1
                if self.on_result:
                    self.on_result(result, done, len(specs))
        except KeyboardInterrupt:
            self._stop()
            executor.shutdown(wait=True, cancel_futures=True)
            for future, spec in futures.items():
                if spec.name not in results:
                    finished = future.done() and not future.cancelled()
                    results[spec.name] = future.result() if finished else RunResult(spec, "interrupted", "new")
            self.write_outputs([results[spec.name] for spec in specs])
            raise
        executor.shutdown()
        return [results[spec.name] for spec in specs]

    def _run_one(self, spec: RunSpec) -> RunResult:
        resumed = has_checkpoint(spec)
        if not resumed and spec.run_dir.exists():
            shutil.rmtree(spec.run_dir)  # interrupted before its first checkpoint: start over cleanly
        command = build_command(self.sweep, spec, self.sets, self.wandb_mode)
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(logs / f"{spec.name}.out", "w") as stdout, open(logs / f"{spec.name}.err", "w") as stderr:
            with self._lock:
                if self._stopping:
                    return RunResult(spec, "interrupted", "new")
                process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=worker_environment())
                self._processes.add(process)
            returncode = process.wait()
            with self._lock:
                self._processes.discard(process)
        seconds = time.monotonic() - start
        started = "resumed" if resumed else "new"
        summary = read_summary(spec.run_dir)
        if returncode == 0 and summary is not None:
            return RunResult(spec, "finished", started, seconds, summary=summary)
        status = "interrupted" if self._stopping else "failed"
        return RunResult(spec, status, started, seconds, error=error_tail(logs / f"{spec.name}.err", returncode))

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            for process in self._processes:
                process.terminate()

    def write_outputs(self, results: list[RunResult]) -> None:
        """results.csv and summary.png under OUT, one row per grid point; safe to call with partial results."""
        results = unfold(results)
        write_results_csv(self.out / "results.csv", results, list(self.sweep["parameters"]))
        plot_summary(self.out / "summary.png", results, plot_keys(self.sweep), metric_name(self.sweep))


def error_tail(path: Path, returncode: int) -> str:
    """The last lines of a run's stderr (train.py's one-line `error: ...` comes last)."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-ERROR_TAIL_LINES:])[-500:] or f"exit status {returncode}"


def metric_name(sweep: dict[str, Any]) -> str:
    return sweep.get("metric", {}).get("name", "normalized_score")


def plot_keys(sweep: dict[str, Any]) -> list[str]:
    """Swept parameters other than the seed: the seed is what the spread is taken over."""
    return [key for key in swept_keys(sweep) if key != "seed"] or swept_keys(sweep)


def result_row(result: RunResult, param_keys: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"run": result.spec.name, "status": result.status, "started": result.started}
    row.update({key: result.spec.params.get(key) for key in param_keys})
    row.update({key: result.summary.get(key) for key in SUMMARY_FIELDS})
    row["seconds"] = None if result.seconds is None else round(result.seconds, 1)
    row["error"] = result.error
    row["run_dir"] = str(result.spec.run_dir)
    return row


def write_results_csv(path: Path, results: list[RunResult], param_keys: list[str]) -> None:
    rows = [result_row(result, param_keys) for result in results]
    columns = ["run", "status", "started", *param_keys, *SUMMARY_FIELDS, "seconds", "error", "run_dir"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def score_of(result: RunResult, metric: str) -> float | None:
    """The sweep metric, or the mean return where the dataset has no reference scores."""
    value = result.summary.get(metric)
    if value is None:
        value = result.summary.get("return_mean")
    return None if value is None else float(value)


def plot_summary(path: Path, results: list[RunResult], keys: list[str], metric: str) -> None:
    """One panel per swept parameter: each value's mean score +- std over the runs that share it."""
    from matplotlib.figure import Figure

    finished = [(result, score_of(result, metric)) for result in results if result.status == "finished"]
    finished = [(result, score) for result, score in finished if score is not None]
    keys = keys or ["run"]
    fig = Figure(figsize=(4.5 * len(keys), 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [result.spec.params.get(key, result.spec.name) for result, _ in finished]
        scores = [score for _, score in finished]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and len(set(values)) > 12:  # continuous draws: every run is its own value
            ax.scatter(values, scores, s=14)
        else:
            labels = sorted({str(v) for v in values}, key=lambda s: (float(s) if numeric else 0.0, s))
            groups = [[score for value, score in zip(values, scores) if str(value) == label] for label in labels]
            means = [statistics.fmean(group) for group in groups]
            spreads = [statistics.pstdev(group) for group in groups]
            positions = range(len(labels))
            ax.errorbar(positions, means, yerr=spreads, fmt="o", capsize=4)
            for position, group in zip(positions, groups):
                ax.scatter([position] * len(group), group, s=10, alpha=0.4, color="gray")
            ax.set_xticks(list(positions), [label.rsplit("/", 1)[-1] for label in labels], rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if not finished:
        fig.suptitle("no finished runs yet")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def format_table(results: list[RunResult], keys: list[str], metric: str) -> str:
    """A fixed-width table of every run: name, status, swept parameters, score."""
    header = ["run", "status", *keys, metric]
    rows = [header]
    for result in results:
        score = score_of(result, metric)
        rows.append([result.spec.name, result.status, *(str(result.spec.params.get(k)) for k in keys),
                     "" if score is None else f"{score:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def prepare_datasets(specs: list[RunSpec], sets: dict[str, str], workers: int) -> None:
    """Build missing built-in maze datasets before any run starts, several at once.

    train.py builds them on first use (and concurrent builds of one id wait for each
    other), but building first keeps the runs' timings free of the build.
    """
    from offrl.data.pointmaze import maze_dataset_exists, parse_maze_id

    ids = {str(sets.get("dataset", spec.params.get("dataset"))) for spec in specs
           if not (spec.run_dir / "summary.json").is_file()}
    missing = sorted(i for i in ids if parse_maze_id(i) is not None and not maze_dataset_exists(i))
    if not missing:
        return
    print(f"sweep: building {len(missing)} dataset(s) first: {', '.join(missing)}", flush=True)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        codes = list(executor.map(lambda i: subprocess.run([sys.executable, "-m", "offrl.cli.make_dataset", i]).returncode, missing))
    failed = [i for i, code in zip(missing, codes) if code != 0]
    if failed:
        print(f"sweep: could not build {', '.join(failed)}; their runs will fail", flush=True)
