"""Train an agent: python scripts/train.py --agent iql-ddpg [--dataset ID_OR_FILE] [--key value ...]

Every config key can be overridden as --key value or --key=value (see offrl/config.py and
offrl/presets/), a boolean also as --key / --no-key, a list as 256,256; --config FILE.yaml merges
a preset. --resume RUN_DIR continues a killed or finished run from its latest checkpoint;
--steps N with it extends the run to N updates.
With --resume, keys that change only when the run evaluates, checkpoints and logs may be
given too (offrl.experiment.RESUME_SAFE_KEYS); any other key that differs from the run's is refused.
--num-seeds K trains seeds seed..seed+K-1 together; --vmap KEY=V1,V2[,KEY2=...] trains every
combination of those hyperparameter values (x seeds) in one compiled program, each its own
run in RUN_DIR/KEY=V... (offrl/vmap.py; only keys the agent's config declares batchable, marked vmap-able in --help).
Exit status 0 on success; otherwise one line on stderr says why.
"""

from __future__ import annotations

import sys
from typing import Any

from offrl.cli import main_guard


def final_line(summary: dict[str, Any], run_dir: str) -> str:
    """The run's last line: a single-seed summary, or a --num-seeds summary (means over seeds,
    spread across seeds)."""
    score = summary.get("normalized_score")
    headline = f"normalized score {score:.1f}" if score is not None else f"return {summary['return_mean']:.1f}"
    if "seeds" in summary:
        spread = f"+- {summary['return_mean_seed_std']:.1f} (sample std) across {len(summary['seeds'])} seeds"
    else:
        spread = f"+- {summary['return_std']:.1f}"
    return (
        f"offrl: final {headline} (return {summary['return_mean']:.1f} {spread}, "
        f"success {summary['success_rate']:.2f}) over {summary['episodes']} episodes -> {run_dir}/summary.json"
    )


def help_text(argv: list[str]) -> str:
    """Usage, the agents, and every key of the chosen agent (`--agent X`, default iql-ddpg)
    and of the run settings as `--key TYPE (default D, RANGE, vmap-able): doc`."""
    from offrl.agents import agent_config_class, agent_names, get_agent
    from offrl import config as cfg

    agent_name = cfg.parse_overrides(argv).get("agent", cfg.RUN_DEFAULTS["agent"])
    _, agent_defaults = get_agent(agent_name)
    config_class = agent_config_class(agent_name)
    family = agent_name.split("-")[0]
    presets = sorted(path.stem for path in (cfg.PRESET_DIR / family).glob("*.yaml"))
    lines = [__doc__.strip(), "", f"agents: {', '.join(agent_names())}", ""]
    name = f"{config_class.__module__}.{config_class.__name__}"
    lines.append(f"{agent_name} hyperparameters ({name}; --agent NAME --help for another agent's):")
    lines.extend(cfg.help_line(key) for key in cfg.describe(config_class, agent_defaults))
    if presets:
        lines.append(f"  presets offrl/presets/{family}/{{{','.join(presets)}}}.yaml replace some of these defaults on matching datasets and envs")
    groups: dict[str, list[str]] = {}
    for key in cfg.describe(cfg.RunConfig):
        groups.setdefault(key.key.rpartition(".")[0], []).append(cfg.help_line(key))
    for group, group_lines in groups.items():
        lines += ["", f"run settings, {group}.* group:" if group else "run settings:", *group_lines]
    return "\n".join(lines)


def vmap_lines(summary: dict[str, Any], run_dir: str) -> str:
    """One line per --vmap combination (its seeds' mean and spread), then where they are."""
    from offrl.vmap import combination_name

    lines = []
    for combination in summary["combinations"]:
        name = combination_name({key: combination[key] for key in summary["vmap"]})
        lines.append(final_line(combination, f"{run_dir}/{name}").replace("offrl: final", f"offrl: {name}:", 1))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from offrl import config as cfg
    from offrl.experiment import resolve
    from offrl.runner import run

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(help_text([arg for arg in argv if arg not in ("-h", "--help")]))
        return 0
    overrides = cfg.parse_overrides(argv)
    experiment = resolve(overrides)
    summary = run(experiment)
    run_dir = experiment["run_dir"]
    print(vmap_lines(summary, run_dir) if "combinations" in summary else final_line(summary, run_dir))
    return 0


def entry() -> int:
    """The `offrl-train` console script."""
    return main_guard(main)


if __name__ == "__main__":  # python -m offrl.cli.train (the sweep runner's fallback)
    sys.exit(entry())
