"""The policy-extraction study: IQL-AWR vs IQL-DDPG vs IQL-dAWR across action coverage.

One IQL critic recipe, three extractions, built-in maze2d datasets whose generator adds
Gaussian noise of std `noise` to the planner's actions (0: nearly deterministic controller
actions, 0.5: the D4RL maze2d setting, 1.0: dense coverage of the action box). Runs go
through the sweep machinery (`configs/sweeps/policy_extraction.yaml` with its grid
narrowed to the chosen mazes and noise levels); each run trains all its seeds in one
process (`--num-seeds`, vmapped). Then every seed's final checkpoint is probed on a fixed
sample of dataset states:

  policy_std       AWR: mean std of the Gaussian head (the mean-matching symptom)
  off_support      fraction of the policy's (deterministic) actions farther than
                   SUPPORT_RADIUS from every dataset action taken at the K_NEIGHBOURS
                   nearest dataset observations: actions the data never tried there
  q_data, q_policy mean min-Q over the twin heads on dataset actions and on policy actions;
                   q_policy well above q_data at the same states is the critic being exploited
  at_bound         fraction of the policy's actions with a coordinate beyond +-BOUND (the
                   data's own fraction is `data_at_bound`): mode-seeking puts actions there
  ddpg clip score  DDPG's policy evaluated with clip(mu) instead of tanh(mu) (same
                   checkpoint, same episodes); the run's own score is the tanh one

Outputs under --out: results.csv, results.md (the table), findings.md (the questions
answered from the numbers, one line per maze and noise), score_vs_coverage.png,
actions.png (dataset actions vs each policy's, the reference figure) and awr_std.png
(AWR's std over training), probes/*.npz (the arrays behind the figures, for
`load_results`), plus the sweep's runs/ and logs/.

    python benchmarks/extraction_study.py --quick     # umaze, noise 0 and 0.5, 2 seeds: < 10 min on 2 CPU cores
    python benchmarks/extraction_study.py             # umaze/medium/large x noise 0, 0.5, 1 x 3 seeds

The full study is 27 runs of 3 vmapped seeds at the maze2d preset (20k updates,
256x256) on the default-size datasets (1M/2M/4M steps, 9 of them to generate): about
1.5 h of dataset generation plus about 5 h of training on 2 CPU cores; on one GPU the
training takes minutes per run and dataset generation (CPU, MuJoCo) dominates.
Rerunning the same command skips finished runs, so an interrupted study continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from offrl import checkpoint as ckpt
from offrl import sweep as sw
from offrl.cli import main_guard
from offrl.data.pointmaze import maze2d_dataset_id
from offrl.envs import make_eval_vector_env, normalized_score
from offrl.evaluation import evaluate_seeds, summarize_episodes
from offrl.loop import LoopState, stack_states
from offrl.train import restore_run

REPO_ROOT = Path(__file__).resolve().parent.parent
SWEEP_FILE = REPO_ROOT / "configs" / "sweeps" / "policy_extraction.yaml"
METHODS = ("iql-awr", "iql-ddpg", "iql-dawr")
PROBE_STATES = 2000
K_NEIGHBOURS = 32
SUPPORT_RADIUS = 0.2  # in action units; the action box is [-1, 1]^2
SCATTER_POINTS = 2000
BOUND = 0.95  # an action "sits on the bounds" when some coordinate has |a_i| above this


@dataclass(frozen=True)
class StudySettings:
    mazes: tuple[str, ...]
    noises: tuple[float, ...]
    seeds: int
    steps: int
    hidden_dims: str
    dataset_steps: int | None
    eval_episodes: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StudySettings:
        quick = dict(mazes="umaze", noises="0.0,0.5", seeds=2, steps=3000, hidden_dims="128,128",
                     dataset_steps=100_000, eval_episodes=20)
        full = dict(mazes="umaze,medium,large", noises="0.0,0.5,1.0", seeds=3, steps=20_000,
                    hidden_dims="256,256", dataset_steps=None, eval_episodes=50)
        defaults = quick if args.quick else full
        pick = {name: getattr(args, name) if getattr(args, name) is not None else value
                for name, value in defaults.items()}
        return cls(
            mazes=tuple(pick["mazes"].split(",")),
            noises=tuple(float(n) for n in str(pick["noises"]).split(",")),
            seeds=int(pick["seeds"]),
            steps=int(pick["steps"]),
            hidden_dims=pick["hidden_dims"],
            dataset_steps=pick["dataset_steps"],
            eval_episodes=int(pick["eval_episodes"]),
        )

    def dataset_id(self, maze: str, noise: float) -> str:
        return maze2d_dataset_id(maze, noise, self.dataset_steps)


def study_sweep(settings: StudySettings) -> dict[str, Any]:
    """The policy-extraction sweep file with its grid narrowed to this study's cells; seeds
    are not a sweep parameter here because each run trains them together (--num-seeds)."""
    sweep = sw.load_sweep(SWEEP_FILE)
    datasets = [settings.dataset_id(maze, noise) for maze in settings.mazes for noise in settings.noises]
    sweep["parameters"] = {"agent": {"values": list(METHODS)}, "dataset": {"values": datasets}}
    return sweep


def study_sets(settings: StudySettings) -> dict[str, str]:
    return {
        "num_seeds": str(settings.seeds),
        "seed": "0",
        "steps": str(settings.steps),
        "hidden_dims": settings.hidden_dims,
        "eval_episodes": str(settings.eval_episodes),
        "eval_interval": str(settings.steps),
        # Metrics every 250 updates: enough points for the AWR std curve.
        "updates_per_call": str(min(250, settings.steps)),
    }


def restore_seeds(run_dir: Path) -> tuple[list[LoopState], Any, list[int], int]:
    """Every seed's final loop state of a multi-seed run, the experiment (dataset loaded
    once), the seeds and the step."""
    seed_dirs = sorted(run_dir.glob("seed*"), key=lambda path: int(path.name[len("seed"):]))
    first, experiment, step = restore_run(seed_dirs[0])
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
    if agent.config["extraction"] == "awr":
        dist = agent.actor.apply_fn({"params": agent.actor.params}, normalized)
        result["policy_std"] = float(dist.stddev().mean())
    return result


def evaluate_with_clip(states: list[LoopState], experiment: Any, seeds: list[int], step: int,
                       episodes: int) -> list[float]:
    """Normalized scores of DDPG checkpoints acting with clip(mu): the episodes the run's own
    (tanh) evaluation used, so the two are paired."""
    stacked = stack_states(states)
    clip_config = flax.core.FrozenDict({**stacked.agent.config, "eval_squash": "clip"})
    stacked = stacked.replace(agent=stacked.agent.replace(config=clip_config))
    envs = make_eval_vector_env(experiment.spec, episodes * len(seeds), seeds[0])
    try:
        per_seed = evaluate_seeds(envs, stacked, seeds, episodes, experiment.config["eval_deterministic"], step)
    finally:
        envs.close()
    return [summarize_episodes(e, lambda r: normalized_score(experiment.spec, r))["normalized_score"] for e in per_seed]


def std_curve(seed_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "train/policy_std" in row]
    return np.array([row["step"] for row in rows]), np.array([row["train/policy_std"] for row in rows])


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def analyse_cell(maze: str, noise: float, method: str, run_dir: Path, episodes: int) -> dict[str, Any]:
    states, experiment, seeds, step = restore_seeds(run_dir)
    transitions = experiment.transitions
    rng = np.random.default_rng(0)
    rows = rng.choice(len(transitions), size=min(PROBE_STATES, len(transitions)), replace=False)
    probe_observations = transitions.observations[rows]
    data_actions = transitions.actions[rows]
    # Support: the actions the data took at the nearest dataset observations (all dims,
    # goal included, since the behaviour depends on the goal), in normalized coordinates.
    pool = rng.choice(len(transitions), size=min(200_000, len(transitions)), replace=False)
    mean, std = np.asarray(states[0].obs_mean), np.asarray(states[0].obs_std)
    tree = cKDTree((transitions.observations[pool] - mean) / std)
    _, neighbours = tree.query((probe_observations - mean) / std, k=K_NEIGHBOURS)
    neighbour_actions = transitions.actions[pool][neighbours]

    probes = [probe(state, probe_observations, data_actions, neighbour_actions) for state in states]
    summaries = [json.loads((run_dir / f"seed{seed}" / "summary.json").read_text()) for seed in seeds]
    cell: dict[str, Any] = {"maze": maze, "noise": noise, "method": method, "seeds": len(seeds), "steps": step}
    for name in ("normalized_score", "success_rate"):
        cell[name], cell[f"{name}_std"] = mean_std([summary[name] for summary in summaries])
    for name in ("off_support", "at_bound", "q_data", "q_policy"):
        cell[name] = float(np.mean([p[name] for p in probes]))
    cell["data_at_bound"] = at_bound(data_actions)
    cell["policy_std"] = float(np.mean([p["policy_std"] for p in probes])) if method == "iql-awr" else None
    if method == "iql-ddpg":
        cell["clip_score"], cell["clip_score_std"] = mean_std(evaluate_with_clip(states, experiment, seeds, step, episodes))
    else:
        cell["clip_score"] = cell["clip_score_std"] = None
    cell["wall_seconds"] = float(summaries[0]["wall_seconds"])
    extras = {
        "data_actions": transitions.actions[rng.choice(len(transitions), SCATTER_POINTS, replace=False)],
        "policy_actions": probes[0]["actions"][:SCATTER_POINTS],
        "sampled_actions": probes[0]["sampled_actions"][:SCATTER_POINTS],
    }
    if method == "iql-awr":
        curves = [std_curve(run_dir / f"seed{seed}") for seed in seeds]
        extras["std_steps"] = curves[0][0]
        extras["std_values"] = np.stack([values for _, values in curves])
    return {"cell": cell, "extras": extras}


def extras_path(out: Path, cell: dict[str, Any]) -> Path:
    return out / "probes" / f"{cell['maze']}_noise{cell['noise']:g}_{cell['method']}.npz"


def load_results(out: Path) -> list[dict[str, Any]]:
    """A finished study's cells (from results.csv) with their probe arrays, for plotting."""
    results = []
    with open(out / "results.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            cell = {name: (row[name] if name in ("maze", "method") else float(row[name]) if row[name] else None)
                    for name in CSV_FIELDS}
            with np.load(extras_path(out, cell)) as arrays:
                results.append({"cell": cell, "extras": dict(arrays)})
    return results


CSV_FIELDS = ("maze", "noise", "method", "seeds", "steps", "normalized_score", "normalized_score_std", "success_rate",
              "success_rate_std", "policy_std", "at_bound", "data_at_bound", "off_support", "q_data", "q_policy", "clip_score", "clip_score_std",
              "wall_seconds")


def fmt(value: float | None, spread: float | None = None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if spread is None else f"{value:.{digits}f} ± {spread:.{digits}f}"


def write_tables(cells: list[dict[str, Any]], out: Path) -> str:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({name: cell[name] for name in CSV_FIELDS} for cell in cells)
    header = ("| maze | noise | method | normalized score | success | AWR std | at bounds (data) | off-support "
              "| Q data | Q policy | DDPG clip score |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for c in cells:
        lines.append(
            f"| {c['maze']} | {c['noise']:g} | {c['method']} | {fmt(c['normalized_score'], c['normalized_score_std'])} "
            f"| {fmt(c['success_rate'], c['success_rate_std'], 2)} | {fmt(c['policy_std'], digits=2)} "
            f"| {c['at_bound']:.2f} ({c['data_at_bound']:.2f}) | {fmt(c['off_support'], digits=2)} | {fmt(c['q_data'], digits=3)} | {fmt(c['q_policy'], digits=3)} "
            f"| {fmt(c['clip_score'], c['clip_score_std'])} |"
        )
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    return table


def findings(cells: list[dict[str, Any]]) -> list[str]:
    """The study's questions answered from its numbers, one line per maze and noise level;
    whether a claim holds is read off the numbers, never assumed."""
    lines = []
    by_cell = {(c["maze"], c["noise"], c["method"]): c for c in cells}
    for maze, noise in dict.fromkeys((c["maze"], c["noise"]) for c in cells):
        awr, ddpg, dawr = (by_cell.get((maze, noise, method)) for method in METHODS)
        if awr is None or ddpg is None or dawr is None:
            continue
        ranked = sorted((awr, ddpg, dawr), key=lambda c: -c["normalized_score"])
        order = " > ".join(f"{c['method'].removeprefix('iql-')} {c['normalized_score']:.1f}±{c['normalized_score_std']:.1f}"
                           for c in ranked)
        lines.append(
            f"{maze}, noise {noise:g}: {order}. AWR std {awr['policy_std']:.2f}; actions on the bounds: data "
            f"{awr['data_at_bound']:.0%}, ddpg {ddpg['at_bound']:.0%}, dawr {dawr['at_bound']:.0%}, awr mean "
            f"{awr['at_bound']:.0%}. Q(policy) - Q(data): ddpg {ddpg['q_policy'] - ddpg['q_data']:+.3f}, "
            f"awr {awr['q_policy'] - awr['q_data']:+.3f}, dawr {dawr['q_policy'] - dawr['q_data']:+.3f}; "
            f"off-support: ddpg {ddpg['off_support']:.0%}, awr {awr['off_support']:.0%}, dawr {dawr['off_support']:.0%}. "
            f"DDPG tanh {ddpg['normalized_score']:.1f} vs clip {ddpg['clip_score']:.1f}."
        )
    return lines


def plot_score_vs_coverage(cells: list[dict[str, Any]], mazes: tuple[str, ...]) -> Figure:
    figure = Figure(figsize=(4.5 * len(mazes), 3.8))
    axes = figure.subplots(1, len(mazes), squeeze=False)
    for axis, maze in zip(axes[0], mazes):
        for method in METHODS:
            rows = sorted((c for c in cells if c["maze"] == maze and c["method"] == method), key=lambda c: c["noise"])
            noises = [c["noise"] for c in rows]
            axis.errorbar(noises, [c["normalized_score"] for c in rows], yerr=[c["normalized_score_std"] for c in rows],
                          marker="o", capsize=3, label=method)
            if method == "iql-ddpg":
                axis.errorbar(noises, [c["clip_score"] for c in rows], yerr=[c["clip_score_std"] for c in rows],
                              marker="x", capsize=3, linestyle="--", label="iql-ddpg (clip at eval)")
        axis.set_title(f"maze2d {maze}")
        axis.set_xlabel("dataset action noise (coverage)")
        axis.set_ylabel("normalized score")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_actions(results: list[dict[str, Any]], maze: str, noise: float) -> Figure:
    chosen = {r["cell"]["method"]: r["extras"] for r in results if r["cell"]["maze"] == maze and r["cell"]["noise"] == noise}
    panels = [("dataset actions", chosen[METHODS[0]]["data_actions"])]
    panels += [("iql-awr (sampled)", chosen["iql-awr"]["sampled_actions"]),
               ("iql-ddpg (deterministic)", chosen["iql-ddpg"]["policy_actions"]),
               ("iql-dawr (sampled)", chosen["iql-dawr"]["sampled_actions"])]
    figure = Figure(figsize=(3.6 * len(panels), 3.8))
    axes = figure.subplots(1, len(panels), sharex=True, sharey=True)
    for axis, (title, actions) in zip(axes, panels):
        axis.scatter(actions[:, 0], actions[:, 1], s=2, alpha=0.3)
        axis.set_title(title, fontsize=10)
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_aspect("equal")
    figure.suptitle(f"maze2d {maze}, action noise {noise:g}: actions at dataset states (seed 0)")
    figure.tight_layout()
    return figure


def plot_awr_std(results: list[dict[str, Any]]) -> Figure:
    figure = Figure(figsize=(5.5, 3.8))
    axis = figure.subplots()
    for result in results:
        if "std_values" not in result["extras"]:
            continue
        steps, stds = result["extras"]["std_steps"], result["extras"]["std_values"]
        cell = result["cell"]
        line, = axis.plot(steps, stds.mean(axis=0), label=f"{cell['maze']}, noise {cell['noise']:g}")
        axis.fill_between(steps, stds.min(axis=0), stds.max(axis=0), color=line.get_color(), alpha=0.2)
    axis.set_xlabel("update")
    axis.set_ylabel("AWR policy std (batch mean)")
    axis.set_title("IQL-AWR: Gaussian std over training (band: seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one maze, two noise levels, two seeds, short budget")
    parser.add_argument("--out", type=Path, default=None, help="default runs/benchmarks/extraction_study[_quick]")
    parser.add_argument("--mazes", default=None, help="comma-separated: umaze,medium,large")
    parser.add_argument("--noises", default=None, help="comma-separated action-noise levels, e.g. 0.0,0.5,1.0")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per run (trained together)")
    parser.add_argument("--steps", type=int, default=None, help="updates per run")
    parser.add_argument("--hidden-dims", dest="hidden_dims", default=None, help="e.g. 256,256")
    parser.add_argument("--dataset-steps", dest="dataset_steps", type=int, default=None,
                        help="dataset size (default: each maze's default size; --quick 100000)")
    parser.add_argument("--eval-episodes", dest="eval_episodes", type=int, default=None, help="episodes per seed")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at a time (default 1: one run already uses every core for its seeds)")
    parser.add_argument("--wandb.mode", dest="wandb_mode", default="disabled", choices=["online", "offline", "disabled"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = StudySettings.from_args(args)
    out = args.out or REPO_ROOT / "runs" / "benchmarks" / ("extraction_study_quick" if args.quick else "extraction_study")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sweep = study_sweep(settings)
    sets = study_sets(settings)
    specs = sw.plan(sweep, out)
    print(f"extraction study: {len(specs)} runs x {settings.seeds} seeds -> {out}", flush=True)
    sw.prepare_datasets(specs, sets, workers=args.workers)

    def progress(result: sw.RunResult, done: int, total: int) -> None:
        detail = f"{result.summary.get('normalized_score', float('nan')):.1f}" if result.status == "finished" else result.error
        print(f"[{done}/{total}] {result.status} {result.spec.name}: {detail}", flush=True)

    runner = sw.SweepRunner(sweep, out, workers=args.workers, sets=sets, wandb_mode=args.wandb_mode, on_result=progress)
    run_results = runner.run(specs)
    failed = [r for r in run_results if r.status != "finished"]
    if failed:
        raise sw.SweepError(f"{len(failed)} of {len(run_results)} runs failed: "
                            + "; ".join(f"{r.spec.name}: {r.error}" for r in failed))

    results = []
    for spec in specs:
        dataset, method = spec.params["dataset"], spec.params["agent"]
        maze, noise = next((m, n) for m in settings.mazes for n in settings.noises if settings.dataset_id(m, n) == dataset)
        print(f"probing {method} on {dataset}", flush=True)
        results.append(analyse_cell(maze, noise, method, spec.run_dir, settings.eval_episodes))
    cells = sorted((r["cell"] for r in results), key=lambda c: (settings.mazes.index(c["maze"]), c["noise"],
                                                               METHODS.index(c["method"])))
    for result in results:
        path = extras_path(out, result["cell"])
        path.parent.mkdir(exist_ok=True)
        np.savez_compressed(path, **result["extras"])
    table = write_tables(cells, out)
    reference_noise = 0.5 if 0.5 in settings.noises else settings.noises[-1]
    figures = {
        "score_vs_coverage.png": plot_score_vs_coverage(cells, settings.mazes),
        "actions.png": plot_actions(results, settings.mazes[0], reference_noise),
        "awr_std.png": plot_awr_std(results),
    }
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
    (out / "settings.json").write_text(json.dumps({**settings.__dict__, "total_seconds": time.perf_counter() - started},
                                                  indent=2))
    lines = findings(cells)
    (out / "findings.md").write_text("".join(f"- {line}\n" for line in lines))
    print(table)
    print("\n".join(lines))
    print(f"extraction study: {time.perf_counter() - started:.0f} s; {out / 'results.csv'}, results.md, "
          "score_vs_coverage.png, actions.png, awr_std.png")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main()))
