"""offrl: offline RL in JAX. `offrl.load_policy(run_dir)` gives a trained run's policy from
its run directory alone (no dataset, no training code beyond this package)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offrl.policy import Policy


def load_policy(run_dir: str | Path, best: bool = False) -> Policy:
    """The policy of a run directory (or checkpoint directory RUN_DIR/checkpoints/STEP): its
    latest checkpoint, or with `best` the best by evaluation score.

    `policy(observations)` takes a batch of raw environment observations and returns the
    actions the run's deterministic evaluation takes (flattening, normalization and squashing
    included); see `offrl.policy.Policy`. Submodules are imported here, not at package import,
    so `import offrl` stays cheap."""
    from offrl import checkpoint as ckpt
    from offrl.policy import Policy
    from offrl.experiment import restore_run

    manager_dir, step = ckpt.find_checkpoint(run_dir, "best" if best else "latest")
    state, experiment, step = restore_run(manager_dir / str(step), data=False)
    meta = ckpt.read_meta(manager_dir, step)
    score, env = meta.get("score"), meta["env"]
    if env["observation_space"] is None:
        raise ValueError(f"{run_dir} has no evaluation env to take observation and action spaces from; train with --env ENV_ID")
    return Policy(
        agent=state.agent,
        obs_mean=state.obs_mean,
        obs_std=state.obs_std,
        config=experiment.config,
        step=step,
        score=score,
        observation_layout=env["observation_space"],
        action_layout=env["action_space"],
        spec=experiment.spec,
    )
