"""A run's members: the runs one batch trains, a seed (--num-seeds) of one --vmap combination
each, laid out as runs of their own (directory, config.json, summary.json), and the
summaries over them (per member, per combination over its seeds, for the whole grid)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from offrl import checkpoint as ckpt
from offrl.vmap import combination_name, combinations


def frozen(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy: what was resolved cannot change on the way to the update."""
    return MappingProxyType(copy.deepcopy(dict(config)))


@dataclasses.dataclass(frozen=True)
class Member:
    """One run trained in a batch: a seed (--num-seeds) of one --vmap combination."""

    seed: int
    combination: Mapping[str, Any]
    config: Mapping[str, Any]  # what it would be as a single run
    directory: Path
    combination_config: Mapping[str, Any] | None = None  # its combination's, when that has seeds below it

    @property
    def label(self) -> str:
        return " ".join([*(f"{key}={value}" for key, value in self.combination.items()), f"seed {self.seed}"])


def batch_members(config: dict[str, Any], grid: Mapping[str, list[Any]]) -> tuple[Member, ...]:
    """Combination-major, seed-minor, each with the config it would have as a single run.
    Without --vmap these are the seeds: one seed keeps the run directory, several get
    run_dir/seed<N> each. With it, each combination gets run_dir/<key=value...>, laid out
    like a --num-seeds run. W&B: one group for the batch, the member in each run's name."""
    run_dir = Path(config["run_dir"])
    seeds = [int(config["seed"]) + i for i in range(int(config["num_seeds"]))]
    base_name = config["wandb"].get("name") or run_dir.name
    group = config["wandb"].get("group") or base_name
    members = []
    for combination in combinations(dict(grid)):
        directory, parent = run_dir, config
        if combination:
            directory = run_dir / combination_name(combination)
            name = f"{base_name}-{combination_name(combination)}"
            parent = {**config, **combination, "vmap": None, "run_dir": str(directory),
                      "wandb": {**config["wandb"], "group": group, "name": name}}
        for seed in seeds:
            member_config, seed_dir = parent, directory
            if len(seeds) > 1:
                seed_dir = directory / f"seed{seed}"
                wandb_settings = {**parent["wandb"], "group": group, "name": f"{parent['wandb'].get('name') or base_name}-seed{seed}"}
                member_config = {**parent, "seed": seed, "num_seeds": 1, "run_dir": str(seed_dir), "wandb": wandb_settings}
            shared = frozen(parent) if combination and len(seeds) > 1 else None
            members.append(Member(seed, MappingProxyType(combination), frozen(member_config), seed_dir, shared))
    return tuple(members)


def write_member_configs(members: tuple[Member, ...]) -> None:
    """Each member's config.json (and its combination's, above several seeds): a complete run
    directory that evaluate.py restores and --resume continues."""
    for member in members:
        if member.combination_config is not None:
            member.directory.parent.mkdir(parents=True, exist_ok=True)
            ckpt.save_config(member.directory.parent, dict(member.combination_config))
        member.directory.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(member.directory, dict(member.config))


def score_of(result: dict[str, float]) -> float:
    return result.get("normalized_score", result["return_mean"])


def aggregate_over_seeds(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over seeds of each final metric, and its sample standard deviation across seeds
    (`<name>_seed_std`, ddof 1)."""
    out: dict[str, float] = {}
    for name in ("return_mean", "normalized_score", "d4rl_normalized_score", "success_rate", "length_mean", "steps_to_goal"):
        values = [summary[name] for summary in summaries if summary.get(name) is not None]
        if values:
            out[name] = float(np.mean(values))
            # the sample spread (ddof 1), what a table of a few seeds should show
            out[f"{name}_seed_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out["episodes"] = int(sum(summary["episodes"] for summary in summaries))
    return out


def write_summaries(
    config: Mapping[str, Any], members: tuple[Member, ...], loggers: list[Any], results: list[dict[str, float]],
    extra: dict[str, Any], grid: Mapping[str, list[Any]],
) -> dict[str, Any]:
    """summary.json for every member, for every combination over its seeds and for the grid;
    returns the run's (the one member's, or the aggregate)."""
    summaries = [{**member.combination, **result, **extra, "seed": member.seed} for result, member in zip(results, members)]
    for member, summary, logger in zip(members, summaries, loggers):
        ckpt.write_json_atomic(member.directory / "summary.json", summary)
        logger.summary(summary)
    per_combination = []
    num_seeds = int(config["num_seeds"])
    for start, combination in zip(range(0, len(members), num_seeds), combinations(dict(grid))):
        seed_summaries = summaries[start:start + num_seeds]
        if num_seeds == 1:
            per_combination.append(seed_summaries[0])
            continue
        combined = {**combination, **aggregate_over_seeds(seed_summaries), **extra, "seeds": seed_summaries}
        ckpt.write_json_atomic(members[start].directory.parent / "summary.json", combined)
        per_combination.append(combined)
    if not grid:
        return per_combination[0]
    summary = {"vmap": dict(grid), **extra, "combinations": per_combination}
    ckpt.write_json_atomic(Path(config["run_dir"]) / "summary.json", summary)
    return summary
