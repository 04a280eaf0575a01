"""Export a run's policy: python scripts/export.py RUN_DIR [--best] [--out DIR] [--platforms cpu,cuda]

Writes DIR/policy.jax, a serialized `jax.export` artefact of the run's deterministic
evaluation policy on raw environment observations (flattening of Dict/Tuple/Discrete
observations, normalization with the run's statistics and the agent's squashing baked in),
and DIR/policy.json, its spec: observation layout, action space, agent, dataset, step and
score. The batch size is symbolic: any number of observations per call. DIR defaults to
RUN_DIR/export. Loading and calling it needs only jax and numpy (see docs/export.md):

    from jax import export
    policy = export.deserialize(bytearray(open("policy.jax", "rb").read()))
    actions = policy.call(observations)   # float32 [batch, *obs shape] -> env actions
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from offrl.cli import main_guard

ARTEFACT = "policy.jax"
SPEC = "policy.json"
SPEC_FORMAT = "offrl-policy/1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="run directory (or checkpoint directory RUN_DIR/checkpoints/STEP)")
    parser.add_argument("--best", action="store_true", help="the best checkpoint by evaluation score, not the latest")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/export)")
    parser.add_argument("--platforms", default="cpu", help="comma-separated: cpu, cuda, rocm, tpu (default cpu)")
    return parser.parse_args(argv)


def export_policy(policy: Any, platforms: tuple[str, ...]) -> Any:
    """`policy.actions_fn` (deterministic) traced for a symbolic batch of observations."""
    import jax
    from jax import export

    from offrl.policy import observation_struct

    key = jax.random.PRNGKey(0)  # deterministic actions do not read it

    def act(observations: Any) -> jax.Array:
        return policy.actions_fn(observations, key, deterministic=True)

    (batch,) = export.symbolic_shape("batch")
    return export.export(jax.jit(act), platforms=platforms)(observation_struct(policy.observation_layout, batch))


def policy_spec(policy: Any, platforms: tuple[str, ...]) -> dict[str, Any]:
    import jax

    config = policy.config
    return {
        "format": SPEC_FORMAT,
        "artefact": ARTEFACT,
        "agent": config["agent"],
        "dataset": config.get("dataset"),
        "env": policy.spec.name if policy.spec is not None else config.get("env"),
        "seed": config["seed"],
        "step": policy.step,
        "score": policy.score,
        "observation": {
            "layout": policy.observation_layout,
            "input": "a batch (leading axis, any size) of raw env observations: float32 arrays for Box and "
            "MultiBinary, int32 for Discrete, a dict (Dict) or tuple (Tuple) of them",
        },
        "action": {
            "space": policy.action_layout,
            "output": "the actions to pass to env.step: int32 [batch] for Discrete, float32 [batch, *shape] otherwise",
        },
        "deterministic": True,
        "normalized_observations": bool(config.get("normalize_observations", False)),
        "platforms": list(platforms),
        "jax_version": jax.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    from offrl import load_policy
    from offrl.checkpoint import write_atomic, write_json_atomic

    args = parse_args(argv)
    platforms = tuple(name.strip() for name in args.platforms.split(",") if name.strip())
    policy = load_policy(args.run_dir, best=args.best)
    exported = export_policy(policy, platforms)
    out = args.out or Path(policy.config["run_dir"]) / "export"
    out.mkdir(parents=True, exist_ok=True)
    artefact = out / ARTEFACT
    write_atomic(artefact, exported.serialize())
    write_json_atomic(out / SPEC, policy_spec(policy, platforms))
    print(f"offrl: {policy.config['agent']} step {policy.step} policy -> {artefact} (spec {out / SPEC})")
    return 0


def entry() -> int:
    """The `offrl-export` console script."""
    return main_guard(main)
