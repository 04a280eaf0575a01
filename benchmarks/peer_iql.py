"""offrl's IQL (AWR extraction) against d3rlpy 2.8.1's IQL: the same rows, settings and evaluation.

    pip install -e ".[peers]" && pip install --no-deps d3rlpy==2.8.1   # see pyproject.toml (torch CPU)
    python benchmarks/peer_iql.py [--dataset offrl/pointmaze/umaze-v1] [--seeds 0,1] [--steps 20000]

Both learners see the same transitions: offrl's rows are converted to a d3rlpy
`MDPDataset` episode by episode. d3rlpy reads an episode as a list of observations and
makes a transition from each step to the next, so an episode that does not end in a
terminal loses its last step unless its final next observation is appended as an extra
step; that step is appended here, and `check_same_transitions` compares every d3rlpy
transition (through d3rlpy's own transition picker) with offrl's rows before training.

Settings are matched (`MATCHED`): 256x256 GELU networks, batch 256, Adam 3e-4 for every
network with a cosine decay of the actor's rate over the run, expectile 0.7, temperature
3, max weight 100, gamma 0.99, tau 0.005, two Q heads (min for the value target and the
advantage). Both actors are Gaussians with a tanh on the mean, evaluated at the mean.
offrl's actor keeps its own defaults (the actor_* keys, see offrl/agents/iql.py); `--offrl KEY=VALUE`
overrides any offrl key for ablations. Both are evaluated by offrl's evaluation, on the same
environment seeds (those `scripts/train.py --seed K` uses), the d3rlpy policy wrapped as an
action function. Updates/s is training only (sampling included, evaluation excluded), and
for offrl it includes the one-off jit compilation, as a user's run does. d3rlpy runs with
`--torch-threads` (default 1, its fastest setting on a small shared CPU).

CORL's single-file IQL is not included: it is a script (no importable package), built on
D4RL/gym and pyrallis, with its own training loop and evaluation, so it could only be
matched by rewriting it, which would no longer be CORL's code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from offrl.config import DEFAULT_DATASET
from offrl.data import load_dataset
from offrl.envs import make_eval_vector_env, normalized_score
from offrl.evaluation import eval_env_seeds, run_episodes, summarize_episodes
from offrl.experiment import resolve
from offrl.runner import run
from offrl.transitions import Transitions

MATCHED: dict[str, Any] = {
    "hidden_dims": [256, 256],
    "batch_size": 256,
    "actor_lr": 3e-4,
    "critic_lr": 3e-4,
    "value_lr": 3e-4,
    "actor_lr_schedule": "cosine",
    "expectile": 0.7,
    "temperature": 3.0,
    "max_weight": 100.0,
    "discount": 0.99,
    "tau": 0.005,
    "layer_norm": False,
    "normalize_observations": False,
}


def to_mdp_dataset(transitions: Transitions) -> Any:
    """offrl rows as a d3rlpy MDPDataset holding the same transitions.

    Rows must be stored episode by episode (next_observations[i] == observations[i + 1]
    inside an episode), as every offrl dataset is; each episode not ending in a terminal
    gets its final next observation appended as one extra step (action 0, reward 0) so
    that d3rlpy keeps its last real step."""
    import d3rlpy

    ends = np.flatnonzero(transitions.episode_ends > 0)
    if len(ends) == 0 or ends[-1] != len(transitions) - 1:
        raise ValueError("the dataset's last row must end an episode (episode_ends); rebuild the dataset")
    starts = np.concatenate([[0], ends[:-1] + 1])
    inside = np.ones(len(transitions), dtype=bool)
    inside[ends] = False
    if not np.array_equal(transitions.next_observations[inside], transitions.observations[1:][inside[:-1]]):
        raise ValueError("rows are not stored episode by episode (next_observations[i] != observations[i+1])")
    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for start, end in zip(starts, ends):
        rows = slice(start, end + 1)
        length = end + 1 - start
        terminal = bool(transitions.terminals[end] > 0)
        observations.append(transitions.observations[rows])
        actions.append(transitions.actions[rows])
        rewards.append(transitions.rewards[rows])
        done = np.zeros(length + (0 if terminal else 1), dtype=np.float32)
        if terminal:
            terminals.append(done.copy())
            terminals[-1][-1] = 1.0
            timeouts.append(np.zeros_like(done))
        else:
            observations.append(transitions.next_observations[end : end + 1])
            actions.append(np.zeros_like(transitions.actions[end : end + 1]))
            rewards.append(np.zeros(1, dtype=transitions.rewards.dtype))
            terminals.append(np.zeros_like(done))
            timeouts.append(done.copy())
            timeouts[-1][-1] = 1.0
    return d3rlpy.dataset.MDPDataset(
        observations=np.concatenate(observations).astype(np.float32),
        actions=np.concatenate(actions).astype(np.float32),
        rewards=np.concatenate(rewards).astype(np.float32).reshape(-1, 1),
        terminals=np.concatenate(terminals),
        timeouts=np.concatenate(timeouts),
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )


def check_same_transitions(transitions: Transitions, dataset: Any) -> None:
    """Every transition d3rlpy samples from equals offrl's row, in order, and none is missing."""
    from d3rlpy.dataset import BasicTransitionPicker

    picker = BasicTransitionPicker()
    count = sum(episode.transition_count for episode in dataset.episodes)
    if count != len(transitions):
        raise AssertionError(f"d3rlpy holds {count} transitions, offrl {len(transitions)}")
    row = 0
    for episode in dataset.episodes:
        n = episode.transition_count
        picked = [picker(episode, index) for index in range(n)]
        rows = slice(row, row + n)
        terminal = np.array([t.terminal for t in picked])
        checks = {
            "observations": np.stack([t.observation for t in picked]) == transitions.observations[rows],
            "actions": np.stack([t.action for t in picked]) == transitions.actions[rows],
            "rewards": np.concatenate([t.reward for t in picked]) == transitions.rewards[rows],
            "terminals": terminal == transitions.terminals[rows],
            # d3rlpy puts zeros after a terminal; only the bootstrapped next observations must agree.
            "next_observations": (np.stack([t.next_observation for t in picked]) == transitions.next_observations[rows])
            | (terminal[:, None] > 0),
        }
        for name, equal in checks.items():
            if not np.all(equal):
                raise AssertionError(f"d3rlpy's {name} differ from offrl's rows in the episode starting at row {row}")
        row += n


def evaluate_policy(spec: Any, policy: Any, seed: int, episodes: int) -> dict[str, float]:
    """offrl's evaluation of `policy` (observations, key) -> actions, on the env seeds a
    `scripts/train.py --seed seed` run evaluates on."""
    envs = make_eval_vector_env(spec, episodes, seed)
    try:
        result = run_episodes(envs, policy, jax.random.PRNGKey(seed + 1), seed=eval_env_seeds([seed], episodes))
    finally:
        envs.close()
    return summarize_episodes(result, lambda returns: normalized_score(spec, returns))


def run_offrl(dataset: str, seed: int, steps: int, episodes: int, extra: dict[str, Any], run_dir: Path) -> dict[str, float]:
    config = resolve(
        {
            "agent": "iql-awr",
            "dataset": dataset,
            "seed": seed,
            "steps": steps,
            "eval_episodes": episodes,
            "eval_interval": steps,
            "run_dir": str(run_dir),
            "wandb.mode": "disabled",
            **MATCHED,
            **extra,
        }
    )
    summary = run(config, progress=False)
    return {
        "score": summary["normalized_score"],
        "success": summary["success_rate"],
        "updates_per_second": summary["updates_per_second"],
    }


def run_d3rlpy(dataset: Any, spec: Any, seed: int, steps: int, episodes: int, threads: int) -> dict[str, float]:
    import d3rlpy
    import torch

    torch.set_num_threads(threads)
    d3rlpy.seed(seed)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=MATCHED["hidden_dims"], activation="gelu")
    algo = d3rlpy.algos.IQLConfig(
        actor_learning_rate=MATCHED["actor_lr"],
        critic_learning_rate=MATCHED["critic_lr"],
        actor_optim_factory=d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)
        ),
        critic_optim_factory=d3rlpy.optimizers.AdamFactory(),
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        value_encoder_factory=encoder,
        batch_size=MATCHED["batch_size"],
        gamma=MATCHED["discount"],
        tau=MATCHED["tau"],
        n_critics=2,
        expectile=MATCHED["expectile"],
        weight_temp=MATCHED["temperature"],
        max_weight=MATCHED["max_weight"],
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    started = time.perf_counter()
    for _ in range(steps):
        algo.update(dataset.sample_transition_batch(MATCHED["batch_size"]))
    elapsed = time.perf_counter() - started

    def policy(observations: jax.Array, key: jax.Array) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(algo.predict(np.asarray(observations, dtype=np.float32)))

    result = evaluate_policy(spec, policy, seed, episodes)
    return {"score": result["normalized_score"], "success": result["success_rate"], "updates_per_second": steps / elapsed}


def mean_std(values: list[float]) -> str:
    """Mean ± sample std (ddof 1) over seeds; a single seed has no spread."""
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{np.mean(values):.1f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| learner | normalized score | success | updates/s |", "|---|---|---|---|"]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {mean_std([r['score'] for r in rows])} | {np.mean([r['success'] for r in rows]):.2f} | "
            f"{np.mean([r['updates_per_second'] for r in rows]):.0f} |"
        )
    if {"offrl iql-awr", "d3rlpy IQL"} <= set(results):
        ours, peer = results["offrl iql-awr"], results["d3rlpy IQL"]
        score_ratio = np.mean([r["score"] for r in ours]) / np.mean([r["score"] for r in peer])
        speed_ratio = np.mean([r["updates_per_second"] for r in ours]) / np.mean([r["updates_per_second"] for r in peer])
        lines.append(f"| ratio offrl / d3rlpy | {score_ratio:.2f}x | | {speed_ratio:.2f}x |")
    return "\n".join(lines)


def parse_extra(pairs: list[str]) -> dict[str, Any]:
    extra = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"peer_iql: --offrl takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        extra[key] = yaml.safe_load(value)
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"default {DEFAULT_DATASET}, the main job's")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    parser.add_argument("--steps", type=int, default=20_000, help="gradient updates per learner and seed")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--offrl", nargs="*", default=[], metavar="KEY=VALUE", help="offrl config overrides")
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch intra-op threads for d3rlpy; 1 is its fastest on a small shared CPU (0.016 s/update "
        "against 0.41 s with 2 threads on 2 busy cores, where torch's thread pool contends)",
    )
    parser.add_argument("--only", choices=("offrl", "d3rlpy"), help="run one learner (e.g. ablations of offrl's actor)")
    args = parser.parse_args(argv)
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        if args.only != "offrl":
            print('peer_iql: d3rlpy is not installed; pip install -e ".[peers]" && pip install --no-deps d3rlpy==2.8.1 '
                  '(or run with --only offrl)', file=sys.stderr)
            return 1
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    extra = parse_extra(args.offrl)
    transitions, spec = load_dataset(args.dataset)
    results: dict[str, list[dict[str, float]]] = {}
    if args.only != "d3rlpy":
        with tempfile.TemporaryDirectory() as tmp:
            results["offrl iql-awr"] = [
                run_offrl(args.dataset, seed, args.steps, args.eval_episodes, extra, Path(tmp) / f"s{seed}") for seed in seeds
            ]
            for seed, row in zip(seeds, results["offrl iql-awr"]):
                print(f"offrl seed {seed}: {row}", flush=True)
    if args.only != "offrl":
        dataset = to_mdp_dataset(transitions)
        check_same_transitions(transitions, dataset)
        print(f"peer_iql: d3rlpy holds the same {len(transitions)} transitions as offrl", flush=True)
        results["d3rlpy IQL"] = [
            run_d3rlpy(dataset, spec, seed, args.steps, args.eval_episodes, args.torch_threads) for seed in seeds
        ]
        for seed, row in zip(seeds, results["d3rlpy IQL"]):
            print(f"d3rlpy seed {seed}: {row}", flush=True)
    print(f"\n{args.dataset}, {args.steps} updates, seeds {seeds}, {args.eval_episodes} episodes each"
          + (f", offrl overrides {extra}" if extra else ""))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
