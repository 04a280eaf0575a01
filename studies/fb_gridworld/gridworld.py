"""Gridworld zero-shot goal reaching: FB's network F against the same objective with F a table.

    python studies/fb_gridworld/gridworld.py [--updates 10000] [--every 2500] [--table-lr 0.03]
    python studies/fb_gridworld/gridworld.py --layout corridor --forward-arch bilinear --gamma horizon --no-table

`--layout` picks four-rooms (default) or one of the corridor mazes of issue 23
(`offrl/envs/gridworld.py`); `--gamma horizon` takes gamma = 1 - 2 / (diameter + 1)
(`horizon_gamma`), a number sets it. Success is printed overall and by shortest-path band
(1-10, 11-20, 21-30, 31+ moves) at every checkpoint.

Issue 5 asks FB trained on uniform-policy data to reach the goal with z = B(goal) from at
least 95% of (start, goal) pairs within 1.5x the shortest path. Both rows train on the
same 50k uniform-policy steps with the same losses (`measure_loss`,
`orthonormality_loss`), greedy next action, min over twin target heads, d, batch, tau and
gamma:

* network: `offrl/agents/fb.py` with the settings of the four-rooms slow test (d=128, 256 wide,
  batch 512, Adam 1e-3, tau 0.05);
* table: F a free table over (goal, state, action) with z = B(goal), B a free table over
  states, Adam `--table-lr` (a table entry moves only when sampled, hence the larger
  rate). It knows no z but the goals', so it is not an agent: it checks whether the
  objective and its hyperparameters reach the target once F's function approximation is
  taken out.

Prints the success rate of both at every `--every` updates, and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


from offrl.agents.fb import (
    FBAgent,
    FBConfig,
    forward_at_actions,
    goal_policies,
    greedy_actions,
    measure_loss,
    orthonormality_loss,
    project_to_sphere,
)
from offrl.buffer import ReplayBuffer
from offrl.envs.gridworld import (
    CORRIDOR_MAZE,
    CORRIDOR_MAZE_WIDE,
    FOUR_ROOMS,
    GridWorld,
    collect_uniform_dataset,
    goal_reaching_by_band,
    goal_reaching_success,
    horizon_gamma,
)
from offrl.loop import LoopState, make_train_chunk
from offrl.networks import polyak_update

DEFAULT_CONFIG = dataclasses.asdict(FBConfig())  # the defaults as a flat dict, which the table runs read by key

NETWORK_CONFIG = {
    "discrete_actions": 4,
    "z_dim": 128,
    "hidden_dim": 256,
    "feature_dim": 256,
    "backward_hidden_dim": 256,
    "batch_size": 512,
    "learning_rate": 1e-3,
    "tau": 0.05,
}

LAYOUTS = {"four-rooms": FOUR_ROOMS, "corridor": CORRIDOR_MAZE, "corridor-wide": CORRIDOR_MAZE_WIDE}


def network_checkpoints(
    env: GridWorld, buffer: ReplayBuffer, updates: int, every: int, config: dict[str, Any], seed: int = 0
) -> list[dict[str, float]]:
    """Success of `offrl/agents/fb.py` (overall and by shortest-path band) after every `every` updates."""
    agent = FBAgent.create(FBConfig(**config), buffer.sample(jax.random.PRNGKey(seed), 2), jax.random.PRNGKey(seed))
    state = LoopState.initial(agent, jax.random.PRNGKey(seed + 1), env.num_states)
    train_chunk = make_train_chunk(FBAgent, every)
    observations = jnp.eye(env.num_states)
    successes = []
    start = time.perf_counter()
    for chunk in range(updates // every):
        state, _ = train_chunk(state, buffer)
        successes.append(goal_reaching_by_band(env, np.asarray(goal_policies(state.agent, observations, observations))))
        # Progress as it comes: a long run's first checkpoints are worth reading before it ends.
        print(f"  {(chunk + 1) * every} updates, {time.perf_counter() - start:.0f} s: "
              + ", ".join(f"{band} {value:.3f}" for band, value in successes[-1].items()), flush=True)
    return successes


def table_checkpoints(
    env: GridWorld,
    buffer: ReplayBuffer,
    updates: int,
    every: int,
    learning_rate: float,
    config: dict[str, Any] | None = None,
) -> list[float]:
    """Success rate of FB with free F and B tables after every `every` updates (`config`
    overrides the network run's settings, `NETWORK_CONFIG` by default)."""
    config = {**DEFAULT_CONFIG, **(NETWORK_CONFIG if config is None else config)}
    num_states, d, radius = env.num_states, config["z_dim"], math.sqrt(config["z_dim"])
    forward_key, backward_key = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "forward": 0.1 * jax.random.normal(forward_key, (2, num_states, num_states, 4, d)),
        "backward": jax.random.normal(backward_key, (num_states, d)),
    }
    optimizer = optax.adam(learning_rate)

    def loss(params: Any, target: Any, batch: dict[str, jax.Array], goals: jax.Array) -> jax.Array:
        states, next_states = batch["observations"].argmax(-1), batch["next_observations"].argmax(-1)
        actions = batch["actions"][:, 0].astype(jnp.int32)
        target_B = project_to_sphere(target["backward"], radius)
        target_F = target["forward"][:, goals, next_states]  # [2, N, A, d]
        next_actions = greedy_actions(target_F, target_B[goals])
        target_F = forward_at_actions(target_F, next_actions)
        target_M = jnp.min(jnp.einsum("kid,jd->kij", target_F, target_B[next_states]), axis=0)
        B = project_to_sphere(params["backward"], radius)[next_states]
        fb, _ = measure_loss(params["forward"][:, goals, states, actions], B, target_M, config["gamma"] * (1.0 - batch["terminals"]))
        return fb + config["ortho_coef"] * orthonormality_loss(B)[0]

    @jax.jit
    def train_chunk(carry: tuple, key: jax.Array, buffer: ReplayBuffer) -> tuple:
        def one_update(carry: tuple, key: jax.Array) -> tuple:
            params, target, opt_state = carry
            batch_key, goal_key = jax.random.split(key)
            batch = buffer.sample(batch_key, config["batch_size"])
            goals = jax.random.randint(goal_key, (config["batch_size"],), 0, num_states)
            grads = jax.grad(loss)(params, target, batch, goals)
            updates, opt_state = optimizer.update(grads, opt_state)
            params = optax.apply_updates(params, updates)
            return (params, polyak_update(params, target, config["tau"]), opt_state), None

        return jax.lax.scan(one_update, carry, jax.random.split(key, every))[0]

    carry = (params, params, optimizer.init(params))
    successes = []
    for key in jax.random.split(jax.random.PRNGKey(1), updates // every):
        carry = train_chunk(carry, key, buffer)
        B = project_to_sphere(carry[0]["backward"], radius)
        z = jnp.broadcast_to(B[:, None], (num_states, num_states, d))
        successes.append(goal_reaching_success(env, np.asarray(greedy_actions(carry[0]["forward"], z))))
    return successes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="four-rooms")
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=2_500)
    parser.add_argument("--table-lr", type=float, default=0.03)
    parser.add_argument("--no-table", action="store_true", help="skip the table-F run")
    parser.add_argument("--forward-arch", choices=("concat", "bilinear"), default="concat")
    parser.add_argument("--gamma", default=str(DEFAULT_CONFIG["gamma"]),
                        help="a number, or 'horizon' for 1 - 2 / (diameter + 1) of the layout (horizon_gamma)")
    parser.add_argument("--mix-ratio", type=float, default=DEFAULT_CONFIG["mix_ratio"])
    parser.add_argument("--z-dim", type=int, default=NETWORK_CONFIG["z_dim"])
    parser.add_argument("--width", type=int, default=NETWORK_CONFIG["hidden_dim"], help="F's and B's hidden and feature width")
    parser.add_argument("--bilinear-rank", type=int, default=DEFAULT_CONFIG["bilinear_rank"],
                        help="width of the bilinear F's elementwise product (its precision in z)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="cosine: Adam's rate decays to 0 over --updates (checkpoints before the end see a partly decayed rate)")
    parser.add_argument("--batch-size", type=int, default=NETWORK_CONFIG["batch_size"])
    parser.add_argument("--seed", type=int, default=0, help="network initialisation and batches (the data stays seed 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the settings and every checkpoint's success here (raw results)")
    args = parser.parse_args(argv)
    if args.updates % args.every:
        parser.error(f"--updates ({args.updates}) must be a multiple of --every ({args.every})")
    env = GridWorld(LAYOUTS[args.layout])
    diameter = int(env.shortest_path_lengths().max())
    if args.gamma == "horizon":
        gamma = horizon_gamma(diameter)
    else:
        try:
            gamma = float(args.gamma)
        except ValueError:
            parser.error(f"--gamma must be a number or 'horizon', got {args.gamma!r}")
    config = {**NETWORK_CONFIG, "gamma": gamma, "forward_arch": args.forward_arch, "mix_ratio": args.mix_ratio, "z_dim": args.z_dim,
              "hidden_dim": args.width, "feature_dim": args.width, "backward_hidden_dim": args.width,
              "bilinear_rank": args.bilinear_rank, "lr_schedule": args.lr_schedule, "max_steps": args.updates,
              "batch_size": args.batch_size}
    buffer = ReplayBuffer.from_transitions(collect_uniform_dataset(env, num_steps=50_000, seed=0))
    start = time.perf_counter()
    network = network_checkpoints(env, buffer, args.updates, args.every, config, args.seed)
    network_seconds = time.perf_counter() - start
    table = [] if args.no_table else table_checkpoints(env, buffer, args.updates, args.every, args.table_lr, config)
    table_seconds = time.perf_counter() - start - network_seconds
    print(f"{args.layout} ({env.num_states} cells, diameter {diameter}) goal reaching, z = B(goal), within 1.5x the "
          f"shortest path (target 0.95); {args.forward_arch} F, gamma {gamma:.4f}, mix_ratio {args.mix_ratio}, "
          f"d={args.z_dim}, width {args.width}, rank {args.bilinear_rank}, batch {args.batch_size}, "
          f"{args.lr_schedule} learning rate, seed {args.seed}; "
          f"network {network_seconds:.0f} s, table {table_seconds:.0f} s")
    bands = [key for key in network[0] if key != "all"]
    print("| updates | network F (offrl/agents/fb.py) | " + " | ".join(f"{band} moves" for band in bands)
          + ("" if args.no_table else " | table F | network / table") + " |")
    print("|---|---|" + "---|" * len(bands) + ("" if args.no_table else "---|---|"))
    for i, net in enumerate(network):
        row = f"| {(i + 1) * args.every} | {net['all']:.3f} | " + " | ".join(f"{net[band]:.3f}" for band in bands)
        if not args.no_table:
            row += f" | {table[i]:.3f} | {net['all'] / max(table[i], 1e-9):.2f}"
        print(row + " |", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"settings": {**{key: value for key, value in vars(args).items() if key != "json"}, "gamma": gamma},
                  "network_seconds": network_seconds, "load_average": os.getloadavg()[0],
                  "network": [{"updates": (i + 1) * args.every, **{band: float(value) for band, value in net.items()}} for i, net in enumerate(network)],
                  "table": [{"updates": (i + 1) * args.every, "all": float(value)} for i, value in enumerate(table)]}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
