"""The policy-extraction study (v2): IQL-AWR vs DDPG+BC vs pure DDPG vs dAWR across action coverage.

The question (`shared/seeds/policy_extraction.md`): when do AWR, DDPG-style and discretized-AWR
extraction win, and why. One IQL critic recipe, five extractions, two families of built-in
maze datasets whose generator adds Gaussian noise of std `noise` to the controller's actions
(0: narrow, near-deterministic actions; 0.5: the D4RL maze2d setting; 1: dense coverage):

  maze2d     offrl/maze2d/<maze>[-noiseXpY]-v0: one fixed target, not observed, reward at every
             step, the data wandering between random goals: several behaviour modes per state,
             the question's setting (docs/datasets.md)
  pointmaze  offrl/pointmaze/<maze>[-noiseXpY]-v1: goal in the observation, terminal on arrival
             (one behaviour mode per state, up to the noise)

Extractions (the table's `method` column):

  awr          iql-awr: Gaussian head, exp(beta A)-weighted likelihood
  ddpg-bc      iql-ddpg, bc_weight 0.1 (DDPG+BC, what current work calls DDPG-style extraction)
  ddpg-pure    iql-ddpg, bc_weight 0 (the question's DDPG; an ablation)
  dawr-kmeans  iql-dawr, 64 k-means tokens over joint actions
  dawr-bins    iql-dawr, 16 bins per action dimension

One process per (family, maze, noise, extraction) trains every seed (`--num-seeds`); DDPG+BC and
pure DDPG share one process (`--vmap bc_weight=0.1,0.0`), so 4 processes per dataset. They run
through the sweep runner (`sweeps/policy_extraction.yaml` gives the program and command),
one at a time by default. Every run evaluates `eval_interval`-periodically and logs the critic's
mean Q and AWR's policy std, so the learning curves come from its metrics.jsonl. Then each
method's final checkpoints are probed at a fixed sample of dataset states:

  policy_std       AWR: mean std of the Gaussian head (the mean-matching symptom)
  off_support      fraction of the policy's (deterministic) actions farther than SUPPORT_RADIUS
                   from every dataset action taken at the K_NEIGHBOURS nearest dataset observations
  q_data, q_policy mean min-Q over the twin heads on dataset actions and on policy actions; q_policy
                   well above q_data at the same states is the critic being exploited
  at_bound         fraction of the policy's actions with a coordinate beyond +-BOUND (the data's own
                   fraction is `data_at_bound`)
  clip score       both DDPG variants evaluated again with clip(mu) instead of tanh(mu): the same
                   checkpoints on the same episodes (the run's own score is the tanh one)

Outputs under --out: results.json (every cell with its per-seed values and curves' summary),
results.csv / results.md (the table, mean +- sample std (ddof 1) over seeds), claims.md (each claim of the
question marked reproduced / not reproduced / mixed, with the numbers, and what the study finds
beyond them), curves.md (where score, mean Q and AWR std flatten), score_vs_coverage.png,
curves_<family>.png, actions_<family>.png, probes/*.npz (the arrays behind the figures), plus
the runner's runs/ and logs/. Rerunning the same command skips finished runs (and resumes
half-done ones from their checkpoints) and finished probes; settings.json pins the budget, so
a rerun with another budget into the same --out is refused.

    python studies/policy_extraction/study.py --quick   # umaze, both families, noise 0 and 1, 2 seeds, 3k updates
    python studies/policy_extraction/study.py           # the recorded CPU study: umaze, 5k updates of 128x128 nets
    python studies/policy_extraction/study.py --steps 1000000 --hidden-dims 256,256 --eval-episodes 50 \\
        --mazes umaze,medium,large --workers 4 --out runs/studies/policy_extraction_full   # the full budget, a GPU

The 5k-update default is what the 24 umaze processes fit in on 2 shared CPU cores in about
1.5 h; the critic's mean Q is still rising there. On an H200, maze2d umaze at `--steps 50000
--hidden-dims 256,256 --eval-episodes 50 --workers 12` trained in under 5 minutes and has
converged (studies/policy_extraction/v2.md); processes sharing a GPU are time-sliced, so the full
budget costs about 2.8 GPU-minutes per process whatever `--workers` is. maze2d medium and
large at `--steps 10000 --workers 2` took 49 minutes on 2 idle CPU cores and had not converged.
The recorded studies' outputs (without checkpoints) are in studies/policy_extraction/raw/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from offrl import checkpoint as ckpt
from offrl import sweep as sw
from offrl.cli import main_guard
from offrl.data.pointmaze import maze_dataset_id
from offrl.envs import make_eval_vector_env, normalized_score
from offrl.evaluation import evaluate_seeds, summarize_episodes
from offrl.loop import LoopState, stack_states
from offrl.experiment import restore_run
from offrl.vmap import combination_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEP_FILE = REPO_ROOT / "sweeps" / "policy_extraction.yaml"
FAMILIES = ("maze2d", "pointmaze")
MAZES = ("umaze", "medium", "large")
PROBE_STATES = 2000
K_NEIGHBOURS = 32
SUPPORT_RADIUS = 0.2  # in action units; the action box is [-1, 1]^2
SCATTER_POINTS = 2000
BOUND = 0.95  # an action "sits on the bounds" when some coordinate has |a_i| above this
# A curve has flattened when its last fifth moved by at most this fraction of its whole range.
FLAT_TOLERANCE = 0.1
BC_WEIGHTS = {"ddpg-bc": 0.1, "ddpg-pure": 0.0}


@dataclass(frozen=True)
class Method:
    """One extraction: a row of the table. `process` names the training process it belongs to
    (DDPG+BC and pure DDPG share one, batched over bc_weight)."""

    key: str
    label: str
    agent: str
    process: str
    params: tuple[tuple[str, str], ...] = ()


METHODS = (
    Method("awr", "AWR", "iql-awr", "awr"),
    Method("ddpg-bc", "DDPG+BC", "iql-ddpg", "ddpg"),
    Method("ddpg-pure", "pure DDPG", "iql-ddpg", "ddpg"),
    Method("dawr-kmeans", "dAWR k-means", "iql-dawr", "dawr-kmeans", (("tokenizer", "kmeans"),)),
    Method("dawr-bins", "dAWR bins", "iql-dawr", "dawr-bins", (("tokenizer", "bins"),)),
)
METHOD_BY_KEY = {method.key: method for method in METHODS}
DDPG_KEYS = tuple(BC_WEIGHTS)


@dataclass(frozen=True)
class StudySettings:
    families: tuple[str, ...]
    mazes: tuple[str, ...]
    noises: tuple[float, ...]
    methods: tuple[str, ...]
    seeds: int
    steps: int
    hidden_dims: str
    dataset_steps: int | None
    eval_episodes: int
    eval_interval: int

    # What a finished run's numbers depend on: a rerun into the same --out must match these.
    BUDGET_KEYS = ("seeds", "steps", "hidden_dims", "dataset_steps", "eval_episodes", "eval_interval")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StudySettings:
        quick = dict(families="maze2d,pointmaze", mazes="umaze", noises="0.0,1.0", methods=",".join(METHOD_BY_KEY),
                     seeds=2, steps=3000, hidden_dims="128,128", dataset_steps=100_000, eval_episodes=20)
        full = dict(families="maze2d,pointmaze", mazes="umaze", noises="0.0,0.5,1.0", methods=",".join(METHOD_BY_KEY),
                    seeds=3, steps=5000, hidden_dims="128,128", dataset_steps=None, eval_episodes=20)
        defaults = quick if args.quick else full
        pick = {name: getattr(args, name) if getattr(args, name) is not None else value
                for name, value in defaults.items()}
        families = tuple(pick["families"].split(","))
        mazes = tuple(pick["mazes"].split(","))
        methods = tuple(pick["methods"].split(","))
        for name, values, valid in (("--families", families, FAMILIES), ("--mazes", mazes, MAZES),
                                    ("--methods", methods, tuple(METHOD_BY_KEY))):
            unknown = [value for value in values if value not in valid]
            if unknown:
                raise ValueError(f"{name}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
        steps = int(pick["steps"])
        # Ten evaluations per run by default: the learning curves' points.
        eval_interval = int(args.eval_interval) if args.eval_interval is not None else max(1, steps // 10)
        if steps % eval_interval:
            raise ValueError(f"--eval-interval {eval_interval} must divide --steps {steps} (the curves' last point is the final score)")
        return cls(
            families=families,
            mazes=mazes,
            noises=tuple(float(n) for n in str(pick["noises"]).split(",")),
            methods=methods,
            seeds=int(pick["seeds"]),
            steps=steps,
            hidden_dims=pick["hidden_dims"],
            dataset_steps=pick["dataset_steps"],
            eval_episodes=int(pick["eval_episodes"]),
            eval_interval=eval_interval,
        )

    def dataset_id(self, family: str, maze: str, noise: float) -> str:
        return maze_dataset_id(family, maze, noise, self.dataset_steps)

    def datasets(self) -> list[tuple[str, str, float]]:
        """In the order they train: family by family, and within a maze the narrowest and densest
        noise levels first, since the coverage claims need those two; the middle levels refine."""
        extremes = sorted(self.noises, key=lambda noise: (noise not in (min(self.noises), max(self.noises)), noise))
        return [(family, maze, noise) for family in self.families for maze in self.mazes for noise in extremes]

    def budget(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.BUDGET_KEYS}


def check_budget(settings: StudySettings, out: Path) -> None:
    """Refuse to mix budgets in one output directory: finished runs are skipped on a rerun, so a
    changed budget would silently reuse the old runs."""
    path = out / "settings.json"
    if not path.is_file():
        return
    recorded = json.loads(path.read_text())
    changed = {key: (recorded.get(key), value) for key, value in settings.budget().items() if recorded.get(key) != value}
    if changed:
        detail = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(f"{out} holds a study with another budget ({detail}); use another --out or the recorded settings")


def process_name(family: str, maze: str, noise: float, process: str) -> str:
    return f"{family}_{maze}_noise{noise:g}_{process}"


def selected_bc_weights(settings: StudySettings) -> list[float]:
    return [BC_WEIGHTS[key] for key in DDPG_KEYS if key in settings.methods]


def study_specs(settings: StudySettings, out: Path) -> list[sw.RunSpec]:
    """One training process per (dataset, process) the chosen methods need, in the order they run."""
    specs = []
    processes = list(dict.fromkeys(METHOD_BY_KEY[key].process for key in settings.methods))
    for family, maze, noise in settings.datasets():
        for process in processes:
            method = next(m for m in METHODS if m.process == process)
            params: dict[str, Any] = {"agent": method.agent, "dataset": settings.dataset_id(family, maze, noise),
                                      **dict(method.params)}
            if process == "ddpg":
                params["vmap"] = "bc_weight=" + ",".join(str(weight) for weight in selected_bc_weights(settings))
            name = process_name(family, maze, noise, process)
            # Its members are the seed directories, so a half-done process resumes from their
            # checkpoints (the runner looks there) instead of starting over.
            members = [sw.RunSpec(f"{name}/{key}/seed{seed}", params, method_dir(out, family, maze, noise, key) / f"seed{seed}")
                       for key in settings.methods if METHOD_BY_KEY[key].process == process for seed in range(settings.seeds)]
            specs.append(sw.RunSpec(name, params, out / "runs" / name, members))
    return specs


def method_dir(out: Path, family: str, maze: str, noise: float, key: str) -> Path:
    """Where a method's seeds (seed0, seed1, ...) are: the DDPG variants are --vmap members."""
    method = METHOD_BY_KEY[key]
    run_dir = out / "runs" / process_name(family, maze, noise, method.process)
    if key in BC_WEIGHTS:
        return run_dir / combination_name({"bc_weight": BC_WEIGHTS[key]})
    return run_dir


def study_sets(settings: StudySettings) -> dict[str, str]:
    return {
        "num_seeds": str(settings.seeds),
        "seed": "0",
        "steps": str(settings.steps),
        "hidden_dims": settings.hidden_dims,
        "eval_episodes": str(settings.eval_episodes),
        "eval_interval": str(settings.eval_interval),
        "checkpoint_interval": str(settings.eval_interval),
        # Metrics (mean Q, AWR std) twice per evaluation interval: one compiled chunk length.
        "updates_per_call": str(max(1, settings.eval_interval // 2)),
    }


def restore_seeds(seeds_dir: Path) -> tuple[list[LoopState], Any, list[int], int]:
    """Every seed's final loop state of a multi-seed run (no dataset loaded), the experiment,
    the seeds and the step."""
    seed_dirs = sorted(seeds_dir.glob("seed*"), key=lambda path: int(path.name[len("seed"):]))
    if not seed_dirs:
        raise FileNotFoundError(f"{seeds_dir} holds no seed<N> run directories; rerun the study to train it")
    first, experiment, step = restore_run(seed_dirs[0], data=False)
    states = [first]
    for seed_dir in seed_dirs[1:]:
        manager_dir, seed_step = ckpt.find_checkpoint(seed_dir, "latest")
        states.append(ckpt.restore(manager_dir, seed_step, first))
    seeds = [int(path.name[len("seed"):]) for path in seed_dirs]
    return states, experiment, seeds, step


def at_bound(actions: np.ndarray) -> float:
    return float((np.abs(actions).max(axis=-1) > BOUND).mean())


def policy_actions(state: LoopState, observations: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    return state.agent.sample_actions((observations - state.obs_mean) / state.obs_std, key, deterministic=deterministic)


def probe(state: LoopState, probe_observations: np.ndarray, data_actions: np.ndarray,
          neighbour_actions: np.ndarray) -> dict[str, Any]:
    """Diagnostics of one seed's agent at the probe states (see the module docstring)."""
    agent = state.agent
    observations = jnp.asarray(probe_observations)
    normalized = (observations - state.obs_mean) / state.obs_std
    actions = np.asarray(policy_actions(state, observations, jax.random.PRNGKey(0), deterministic=True))
    sampled = np.asarray(policy_actions(state, observations, jax.random.PRNGKey(1), deterministic=False))
    distances = np.linalg.norm(neighbour_actions - actions[:, None, :], axis=-1).min(axis=1)
    result = {
        "off_support": float((distances > SUPPORT_RADIUS).mean()),
        "at_bound": at_bound(actions),
        "q_data": float(agent.q_values(normalized, jnp.asarray(data_actions)).mean()),
        "q_policy": float(agent.q_values(normalized, jnp.asarray(actions)).mean()),
        "actions": actions,
        "sampled_actions": sampled,
    }
    if agent.config.extraction == "awr":
        dist = agent.actor.apply_fn({"params": agent.actor.params}, normalized)
        result["policy_std"] = float(dist.stddev().mean())
    return result


def evaluate_with_clip(states: list[LoopState], experiment: Any, seeds: list[int], step: int,
                       episodes: int) -> list[float]:
    """Normalized scores of DDPG checkpoints acting with clip(mu): the episodes the run's own
    (tanh) evaluation used, so the two are paired."""
    stacked = stack_states(states)
    clip_config = stacked.agent.config.replace(eval_squash="clip")
    stacked = stacked.replace(agent=stacked.agent.replace(config=clip_config))
    envs = make_eval_vector_env(experiment.spec, episodes * len(seeds), seeds[0])
    try:
        per_seed = evaluate_seeds(envs, stacked, seeds, episodes, experiment.config["eval_deterministic"], step)
    finally:
        envs.close()
    return [summarize_episodes(e, lambda r: normalized_score(experiment.spec, r))["normalized_score"] for e in per_seed]


def read_curves(seed_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of the curves one seed logged: score at each evaluation, the critic's mean Q
    and (AWR) the policy std per logged chunk."""
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curves = {}
    for name, key in (("score", "eval/normalized_score"), ("q", "train/critic/q"), ("std", "train/actor/policy_std")):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            curves[name] = (np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float))
    return curves


def plateau(steps: np.ndarray, values: np.ndarray, tolerance: float = FLAT_TOLERANCE) -> tuple[int, float]:
    """(flat_step, late_change): the first step from which the curve stays within `tolerance` of
    its range around its final value, and how much its last fifth moved, as a fraction of its
    range. A curve with late_change <= tolerance has flattened; a still-rising one gets its last
    steps as flat_step and a late_change near 0.2 or more."""
    span = float(values.max() - values.min())
    if span == 0.0:
        return int(steps[0]), 0.0
    outside = np.nonzero(np.abs(values - values[-1]) > tolerance * span)[0]
    flat_index = int(outside[-1]) + 1 if len(outside) else 0
    fifth = min(int(np.searchsorted(steps, 0.8 * steps[-1])), len(steps) - 1)
    return int(steps[flat_index]), float(abs(values[-1] - values[fifth]) / span)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over seeds; 0 for a single seed."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def support_pools(transitions: Any, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed probe states, their dataset actions and the actions the data took at each
    one's nearest dataset observations (all dims, goal included for pointmaze, since the
    behaviour depends on it), in normalized coordinates: shared by every method of a dataset."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(transitions), size=min(PROBE_STATES, len(transitions)), replace=False)
    pool = rng.choice(len(transitions), size=min(200_000, len(transitions)), replace=False)
    tree = cKDTree((transitions.observations[pool] - mean) / std)
    _, neighbours = tree.query((transitions.observations[rows] - mean) / std, k=min(K_NEIGHBOURS, len(pool)))
    scatter = rng.choice(len(transitions), min(SCATTER_POINTS, len(transitions)), replace=False)
    return {
        "observations": transitions.observations[rows],
        "data_actions": transitions.actions[rows],
        "neighbour_actions": transitions.actions[pool][neighbours.reshape(len(rows), -1)],
        "scatter_actions": transitions.actions[scatter],
    }


def analyse_cell(family: str, maze: str, noise: float, key: str, seeds_dir: Path, episodes: int,
                 pools: dict[str, np.ndarray]) -> dict[str, Any]:
    """One (dataset, method) cell: scores, probes, clip scores and curves of all its seeds."""
    states, experiment, seeds, step = restore_seeds(seeds_dir)
    probes = [probe(state, pools["observations"], pools["data_actions"], pools["neighbour_actions"]) for state in states]
    summaries = [json.loads((seeds_dir / f"seed{seed}" / "summary.json").read_text()) for seed in seeds]
    cell: dict[str, Any] = {"family": family, "maze": maze, "noise": noise, "method": key, "seeds": len(seeds),
                            "steps": step, "wall_seconds": float(summaries[0]["wall_seconds"])}
    per_seed: dict[str, list[float]] = {
        "normalized_score": [float(s["normalized_score"]) for s in summaries],
        "success_rate": [float(s.get("success_rate", float("nan"))) for s in summaries],
    }
    for name in ("off_support", "at_bound", "q_data", "q_policy"):
        per_seed[name] = [p[name] for p in probes]
    if key == "awr":
        per_seed["policy_std"] = [p["policy_std"] for p in probes]
    if key in DDPG_KEYS:
        per_seed["clip_score"] = evaluate_with_clip(states, experiment, seeds, step, episodes)
    cell["per_seed"] = per_seed
    for name, values in per_seed.items():
        cell[name], cell[f"{name}_std"] = mean_std(values)
    cell["data_at_bound"] = at_bound(pools["data_actions"])

    curves = [read_curves(seeds_dir / f"seed{seed}") for seed in seeds]
    extras: dict[str, np.ndarray] = {
        "data_actions": pools["scatter_actions"],
        "policy_actions": probes[0]["actions"][:SCATTER_POINTS],
        "sampled_actions": probes[0]["sampled_actions"][:SCATTER_POINTS],
    }
    for name in ("score", "q", "std"):
        if name not in curves[0]:
            continue
        curve_steps = curves[0][name][0]
        values = np.stack([c[name][1] for c in curves])
        extras[f"{name}_steps"], extras[f"{name}_values"] = curve_steps, values
        cell[f"{name}_flat_step"], cell[f"{name}_late_change"] = plateau(curve_steps, values.mean(axis=0))
    return {"cell": cell, "extras": extras}


def cell_name(cell: dict[str, Any]) -> str:
    return f"{cell['family']}_{cell['maze']}_noise{cell['noise']:g}_{cell['method']}"


def extras_path(out: Path, cell: dict[str, Any]) -> Path:
    return out / "probes" / f"{cell_name(cell)}.npz"


def cell_path(out: Path, cell: dict[str, Any]) -> Path:
    return out / "probes" / f"{cell_name(cell)}.json"


def load_results(out: Path) -> list[dict[str, Any]]:
    """A finished study's cells (results.json) with their probe arrays, for plotting."""
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run studies/policy_extraction/study.py --out {out}")
    results = []
    for cell in json.loads(path.read_text()):
        with np.load(extras_path(out, cell)) as arrays:
            results.append({"cell": cell, "extras": dict(arrays)})
    return results


CSV_FIELDS = ("family", "maze", "noise", "method", "seeds", "steps", "normalized_score", "normalized_score_std",
              "success_rate", "success_rate_std", "policy_std", "policy_std_std", "at_bound", "data_at_bound",
              "off_support", "q_data", "q_policy", "clip_score", "clip_score_std", "score_flat_step",
              "score_late_change", "q_flat_step", "q_late_change", "std_flat_step", "std_late_change", "wall_seconds")


def fmt(value: float | None, spread: float | None = None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if spread is None else f"{value:.{digits}f} ± {spread:.{digits}f}"


def write_tables(cells: list[dict[str, Any]], out: Path) -> str:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({name: cell.get(name) for name in CSV_FIELDS} for cell in cells)
    header = ("| family | maze | noise | method | normalized score | success | AWR std | at bounds (data) | off-support "
              "| Q(policy) - Q(data) | clip at eval |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for c in cells:
        lines.append(
            f"| {c['family']} | {c['maze']} | {c['noise']:g} | {METHOD_BY_KEY[c['method']].label} "
            f"| {fmt(c['normalized_score'], c['normalized_score_std'])} | {fmt(c['success_rate'], c['success_rate_std'], 2)} "
            f"| {fmt(c.get('policy_std'), c.get('policy_std_std'), 2)} | {c['at_bound']:.2f} ({c['data_at_bound']:.2f}) "
            f"| {c['off_support']:.2f} | {c['q_policy'] - c['q_data']:+.3f} "
            f"| {fmt(c.get('clip_score'), c.get('clip_score_std'))} |"
        )
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    return table


def curves_table(cells: list[dict[str, Any]]) -> str:
    """Where each cell's score, mean Q and AWR std flatten (seed means), and whether they had."""
    lines = ["| family | maze | noise | method | score flat from | score: last fifth moved | mean Q flat from "
             "| mean Q: last fifth moved | AWR std flat from | AWR std: last fifth moved |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        parts = []
        for name in ("score", "q", "std"):
            if c.get(f"{name}_flat_step") is None:
                parts += ["-", "-"]
                continue
            late = c[f"{name}_late_change"]
            parts += [f"{c[f'{name}_flat_step']}", f"{late:.0%} ({'flat' if late <= FLAT_TOLERANCE else 'moving'})"]
        lines.append(f"| {c['family']} | {c['maze']} | {c['noise']:g} | {METHOD_BY_KEY[c['method']].label} | "
                     + " | ".join(parts) + " |")
    return "\n".join(lines)


def compare(cells: dict[tuple, dict[str, Any]], where: tuple, first: str, second: str,
            metric: str = "normalized_score") -> tuple[str, str] | None:
    """('wins' | 'loses' | 'ties', numbers) of `first` against `second` in one dataset cell: a
    difference counts only beyond the seeds' spread, sqrt(std_a^2 + std_b^2)."""
    a, b = cells.get((*where, first)), cells.get((*where, second))
    if a is None or b is None:
        return None
    mean_a, std_a, mean_b, std_b = a[metric], a[f"{metric}_std"], b[metric], b[f"{metric}_std"]
    spread = math.hypot(std_a, std_b)
    outcome = "wins" if mean_a - mean_b > spread else "loses" if mean_b - mean_a > spread else "ties"
    return outcome, f"{mean_a:.1f} ± {std_a:.1f} vs {mean_b:.1f} ± {std_b:.1f}"


def verdict(outcomes: list[bool]) -> str:
    if not outcomes:
        return "not run"
    return "reproduced" if all(outcomes) else "not reproduced" if not any(outcomes) else "mixed"


def claims(cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each claim of the question, per family and maze, with the numbers it was judged on; a
    claim that needs a cell the study did not run is 'not run'. The verdicts are read off the
    numbers (a comparison counts only beyond the seed spread), never assumed."""
    by_cell = {(c["family"], c["maze"], c["noise"], c["method"]): c for c in cells}
    rows = []
    for family, maze in dict.fromkeys((c["family"], c["maze"]) for c in cells):
        noises = sorted({c["noise"] for c in cells if c["family"] == family and c["maze"] == maze})
        where = f"{family} {maze}"

        awr = [by_cell[(family, maze, n, "awr")] for n in noises if (family, maze, n, "awr") in by_cell]
        reference = next((c for c in awr if c["noise"] == 0.5), None)
        numbers = ", ".join(f"noise {c['noise']:g}: {c['policy_std']:.2f} ± {c['policy_std_std']:.2f}" for c in awr)
        rows.append({"claim": "AWR's std settles near 0.4 (0.3-0.5) on the D4RL-style data (noise 0.5)", "where": where,
                     "numbers": numbers or "-",
                     "verdict": verdict([0.3 <= reference["policy_std"] <= 0.5] if reference else [])})

        dense = max(noises) if noises and max(noises) >= 1.0 else None
        outcomes, numbers = [], []
        for challenger in ("ddpg-bc", "dawr-kmeans", "dawr-bins"):
            result = compare(by_cell, (family, maze, dense), challenger, "awr") if dense is not None else None
            if result:
                outcomes.append(result[0] == "wins")
                numbers.append(f"{METHOD_BY_KEY[challenger].label} {result[0]}: {result[1]}")
        rows.append({"claim": f"DDPG(+BC) and dAWR beat AWR on dense data (noise {dense if dense is not None else 1:g})",
                     "where": where, "numbers": "; ".join(numbers) or "-", "verdict": verdict(outcomes)})

        narrow = 0.0 if 0.0 in noises else None
        outcomes, numbers = [], []
        for ddpg in DDPG_KEYS:
            result = compare(by_cell, (family, maze, narrow), "awr", ddpg) if narrow is not None else None
            if result:
                outcomes.append(result[0] == "wins")
                numbers.append(f"AWR {result[0]} against {METHOD_BY_KEY[ddpg].label}: {result[1]}")
        rows.append({"claim": "AWR beats DDPG on narrow data (noise 0)", "where": where,
                     "numbers": "; ".join(numbers) or "-", "verdict": verdict(outcomes)})

        outcomes, numbers = [], []
        for noise in noises:
            for ddpg in DDPG_KEYS:
                c = by_cell.get((family, maze, noise, ddpg))
                if c is None:
                    continue
                spread = math.hypot(c["normalized_score_std"], c["clip_score_std"])
                outcomes.append(abs(c["normalized_score"] - c["clip_score"]) <= spread)
                numbers.append(f"noise {noise:g} {METHOD_BY_KEY[ddpg].label}: tanh {c['normalized_score']:.1f} ± "
                               f"{c['normalized_score_std']:.1f} vs clip {c['clip_score']:.1f} ± {c['clip_score_std']:.1f}")
        rows.append({"claim": "tanh vs clip at evaluation does not matter (DDPG variants)", "where": where,
                     "numbers": "; ".join(numbers) or "-", "verdict": verdict(outcomes)})
    return rows


def beyond(cells: list[dict[str, Any]]) -> list[str]:
    """What the question did not ask, one line per dataset: DDPG+BC against pure DDPG across
    coverage (with how far each leaves the data), and k-means tokens against bins."""
    by_cell = {(c["family"], c["maze"], c["noise"], c["method"]): c for c in cells}
    lines = []
    for family, maze, noise in dict.fromkeys((c["family"], c["maze"], c["noise"]) for c in cells):
        where = (family, maze, noise)
        parts = []
        ddpg = compare(by_cell, where, "ddpg-bc", "ddpg-pure")
        if ddpg:
            bc, pure = by_cell[(*where, "ddpg-bc")], by_cell[(*where, "ddpg-pure")]
            parts.append(f"DDPG+BC {ddpg[0]} against pure DDPG ({ddpg[1]}); off-support {bc['off_support']:.0%} vs "
                         f"{pure['off_support']:.0%}, Q(policy) - Q(data) {bc['q_policy'] - bc['q_data']:+.3f} vs "
                         f"{pure['q_policy'] - pure['q_data']:+.3f}")
        tokens = compare(by_cell, where, "dawr-kmeans", "dawr-bins")
        if tokens:
            parts.append(f"dAWR k-means {tokens[0]} against bins ({tokens[1]})")
        ranked = sorted((c for c in cells if (c["family"], c["maze"], c["noise"]) == where),
                        key=lambda c: -c["normalized_score"])
        parts.append("ranking: " + " > ".join(f"{METHOD_BY_KEY[c['method']].label} {c['normalized_score']:.1f}" for c in ranked))
        lines.append(f"{family} {maze}, noise {noise:g}: " + "; ".join(parts) + ".")
    return lines


def write_claims(cells: list[dict[str, Any]], out: Path) -> str:
    rows = claims(cells)
    steps = sorted({c["steps"] for c in cells})
    settled = [c for c in cells if c.get("score_late_change") is not None]
    moving = [cell_name(c) for c in settled if c["score_late_change"] > FLAT_TOLERANCE or c["q_late_change"] > FLAT_TOLERANCE]
    text = [f"# Claims of the policy-extraction question, at {', '.join(map(str, steps))} updates",
            "",
            "Mean ± sample std (ddof 1) over seeds; a comparison counts only when the difference exceeds "
            "sqrt(std_a² + std_b²). Verdict per row: reproduced (every comparison goes the claimed way), "
            "not reproduced (none does) or mixed.",
            "",
            "| claim | where | numbers | verdict |", "|---|---|---|---|"]
    text += [f"| {r['claim']} | {r['where']} | {r['numbers']} | **{r['verdict']}** |" for r in rows]
    text += ["", "## Beyond the question", ""] + [f"- {line}" for line in beyond(cells)]
    text += ["", "## Convergence", "",
             f"{len(settled) - len(moving)} of {len(settled)} cells have flattened score and mean Q curves (the last fifth "
             f"moved by at most {FLAT_TOLERANCE:.0%} of the curve's range); still moving: "
             + (", ".join(moving) if moving else "none") + ".", "", curves_table(cells)]
    markdown = "\n".join(text) + "\n"
    (out / "claims.md").write_text(markdown)
    return markdown


def plot_score_vs_coverage(cells: list[dict[str, Any]]) -> Figure:
    panels = list(dict.fromkeys((c["family"], c["maze"]) for c in cells))
    figure = Figure(figsize=(4.8 * len(panels), 4.0))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (family, maze) in zip(axes[0], panels):
        for method in METHODS:
            rows = sorted((c for c in cells if (c["family"], c["maze"], c["method"]) == (family, maze, method.key)),
                          key=lambda c: c["noise"])
            if not rows:
                continue
            noises = [c["noise"] for c in rows]
            line = axis.errorbar(noises, [c["normalized_score"] for c in rows], yerr=[c["normalized_score_std"] for c in rows],
                                 marker="o", capsize=3, label=method.label)
            if method.key in DDPG_KEYS:
                axis.errorbar(noises, [c["clip_score"] for c in rows], yerr=[c["clip_score_std"] for c in rows],
                              marker="x", capsize=3, linestyle="--", color=line[0].get_color(), alpha=0.6,
                              label=f"{method.label} (clip at eval)")
        axis.set_title(f"{family} {maze}")
        axis.set_xlabel("dataset action noise (coverage)")
        axis.set_ylabel("normalized score")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_curves(results: list[dict[str, Any]], family: str, maze: str) -> Figure:
    """Score, the critic's mean Q and AWR's std against updates, one row per noise level, one
    line per method (band: seeds' min-max), a dot where the seed-mean curve flattens."""
    chosen = [r for r in results if (r["cell"]["family"], r["cell"]["maze"]) == (family, maze)]
    noises = sorted({r["cell"]["noise"] for r in chosen})
    metrics = (("score", "normalized score"), ("q", "mean Q (critic, batches)"), ("std", "AWR policy std"))
    figure = Figure(figsize=(13, 3.2 * len(noises)))
    axes = figure.subplots(len(noises), len(metrics), squeeze=False)
    colors = {method.key: f"C{index}" for index, method in enumerate(METHODS)}
    for row, noise in zip(axes, noises):
        for axis, (name, title) in zip(row, metrics):
            for result in chosen:
                cell, extras = result["cell"], result["extras"]
                if cell["noise"] != noise or f"{name}_values" not in extras:
                    continue
                steps, values = extras[f"{name}_steps"], extras[f"{name}_values"]
                color = colors[cell["method"]]
                axis.plot(steps, values.mean(axis=0), color=color, label=METHOD_BY_KEY[cell["method"]].label)
                axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15)
                flat = cell.get(f"{name}_flat_step")
                if flat is not None:
                    axis.plot([flat], [values.mean(axis=0)[list(steps).index(flat)]], "o", color=color, markersize=5)
            axis.set_title(f"{family} {maze}, noise {noise:g}: {title}", fontsize=9)
            axis.set_xlabel("update")
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_actions(results: list[dict[str, Any]], family: str, maze: str, noise: float) -> Figure:
    chosen = {r["cell"]["method"]: r["extras"] for r in results
              if (r["cell"]["family"], r["cell"]["maze"], r["cell"]["noise"]) == (family, maze, noise)}
    panels = [("dataset actions", next(iter(chosen.values()))["data_actions"])]
    for method in METHODS:
        if method.key in chosen:
            deterministic = method.key in DDPG_KEYS
            kind = "deterministic" if deterministic else "sampled"
            panels.append((f"{method.label} ({kind})",
                           chosen[method.key]["policy_actions" if deterministic else "sampled_actions"]))
    figure = Figure(figsize=(3.0 * len(panels), 3.4))
    axes = figure.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    for axis, (title, actions) in zip(axes, panels):
        axis.scatter(actions[:, 0], actions[:, 1], s=2, alpha=0.3)
        axis.set_title(title, fontsize=9)
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_aspect("equal")
    figure.suptitle(f"{family} {maze}, action noise {noise:g}: actions at dataset states (seed 0)")
    figure.tight_layout()
    return figure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="umaze, noise 0 and 1, two seeds, 3k updates, 100k-step data")
    parser.add_argument("--out", type=Path, default=None, help="default runs/studies/policy_extraction[_quick]")
    parser.add_argument("--families", default=None, help="comma-separated: maze2d,pointmaze")
    parser.add_argument("--mazes", default=None, help="comma-separated: umaze,medium,large")
    parser.add_argument("--noises", default=None, help="comma-separated action-noise levels, e.g. 0.0,0.5,1.0")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHOD_BY_KEY)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per run (trained together)")
    parser.add_argument("--steps", type=int, default=None, help="updates per run")
    parser.add_argument("--hidden-dims", dest="hidden_dims", default=None, help="e.g. 256,256")
    parser.add_argument("--dataset-steps", dest="dataset_steps", type=int, default=None,
                        help="dataset size (default: each maze's default size; --quick 100000)")
    parser.add_argument("--eval-episodes", dest="eval_episodes", type=int, default=None, help="episodes per seed")
    parser.add_argument("--eval-interval", dest="eval_interval", type=int, default=None,
                        help="updates between evaluations, the learning curves' points (default steps / 10)")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at a time (default 1: one run already uses every core for its seeds)")
    parser.add_argument("--finished-only", dest="finished_only", action="store_true",
                        help="train nothing: analyse the processes that have finished and name the missing ones")
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="disabled", choices=["online", "offline", "disabled"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = StudySettings.from_args(args)
    out = args.out or REPO_ROOT / "runs" / "studies" / ("policy_extraction_quick" if args.quick else "policy_extraction")
    out.mkdir(parents=True, exist_ok=True)
    check_budget(settings, out)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    started = time.perf_counter()
    sweep = sw.load_sweep(SWEEP_FILE)
    sets = study_sets(settings)
    specs = study_specs(settings, out)
    print(f"extraction study: {len(specs)} processes x {settings.seeds} seeds, {settings.steps} updates -> {out}", flush=True)
    if not args.finished_only:
        sw.prepare_datasets(specs, sets, workers=args.workers)

    def progress(result: sw.RunResult, done: int, total: int) -> None:
        detail = f"{result.seconds:.0f} s" if result.status == "finished" and result.seconds else result.error
        print(f"[{done}/{total}] {result.status} ({result.started}) {result.spec.name}: {detail}", flush=True)

    if args.finished_only:
        missing = [spec.name for spec in specs if sw.read_summary(spec.run_dir) is None]
        if missing:
            print(f"extraction study: not finished, left out of the analysis: {', '.join(missing)}", flush=True)
    else:
        runner = sw.SweepRunner(sweep, out, workers=args.workers, sets=sets, wandb_mode=args.wandb_mode, on_result=progress)
        run_results = runner.run(specs)
        failed = [r for r in run_results if r.status != "finished"]
        if failed:
            raise sw.SweepError(f"{len(failed)} of {len(run_results)} runs failed: "
                                + "; ".join(f"{r.spec.name}: {r.error}" for r in failed))
        missing = []

    results = []
    for family, maze, noise in sorted(settings.datasets(), key=lambda d: (settings.families.index(d[0]),
                                                                          settings.mazes.index(d[1]), d[2])):
        pools = None
        for key in settings.methods:
            if process_name(family, maze, noise, METHOD_BY_KEY[key].process) in missing:
                continue
            name = {"family": family, "maze": maze, "noise": noise, "method": key}
            if cell_path(out, name).is_file() and extras_path(out, name).is_file():
                with np.load(extras_path(out, name)) as arrays:
                    results.append({"cell": json.loads(cell_path(out, name).read_text()), "extras": dict(arrays)})
                continue
            seeds_dir = method_dir(out, family, maze, noise, key)
            if pools is None:
                # The dataset once per (family, maze, noise); the checkpoints restore without it.
                first, experiment, _ = restore_run(seeds_dir / "seed0")
                pools = support_pools(experiment.transitions, np.asarray(first.obs_mean), np.asarray(first.obs_std))
            print(f"probing {key} on {settings.dataset_id(family, maze, noise)}", flush=True)
            result = analyse_cell(family, maze, noise, key, seeds_dir, settings.eval_episodes, pools)
            extras_path(out, result["cell"]).parent.mkdir(exist_ok=True)
            np.savez_compressed(extras_path(out, result["cell"]), **result["extras"])
            ckpt.write_json_atomic(cell_path(out, result["cell"]), result["cell"])
            results.append(result)
    cells = [r["cell"] for r in results]
    ckpt.write_json_atomic(out / "results.json", cells)
    table = write_tables(cells, out)
    claims_text = write_claims(cells, out)
    figures = {"score_vs_coverage.png": plot_score_vs_coverage(cells)}
    for family in settings.families:
        for maze in settings.mazes:
            analysed = sorted({c["noise"] for c in cells if (c["family"], c["maze"]) == (family, maze)})
            if not analysed:
                continue
            suffix = family if maze == "umaze" else f"{family}_{maze}"
            figures[f"curves_{suffix}.png"] = plot_curves(results, family, maze)
            # The D4RL-style data (noise 0.5) is the question's reference figure.
            figures[f"actions_{suffix}.png"] = plot_actions(results, family, maze, 0.5 if 0.5 in analysed else analysed[-1])
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
    print(table)
    print(claims_text)
    print(f"extraction study: {time.perf_counter() - started:.0f} s; {out / 'results.md'}, claims.md, "
          + ", ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main()))
