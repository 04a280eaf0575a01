"""Four-rooms zero-shot goal reaching: FB's network F against the same objective with F a table.

    python benchmarks/fb_gridworld.py [--updates 10000] [--every 2500] [--table-lr 0.03]

Issue 5 asks FB trained on uniform-policy data to reach the goal with z = B(goal) from at
least 95% of (start, goal) pairs within 1.5x the shortest path. Both rows train on the
same 50k uniform-policy steps with the same losses (`measure_loss`,
`orthonormality_loss`), greedy next action, min over twin target heads, d, batch, tau and
gamma:

* network: `agents/fb.py` with the settings of the four-rooms slow test (d=128, 256 wide,
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
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.fb import (  # noqa: E402
    DEFAULT_CONFIG,
    FBAgent,
    forward_at_actions,
    goal_policies,
    greedy_actions,
    measure_loss,
    orthonormality_loss,
    project_to_sphere,
)
from offrl.buffer import ReplayBuffer  # noqa: E402
from offrl.envs.gridworld import FOUR_ROOMS, GridWorld, collect_uniform_dataset, goal_reaching_success  # noqa: E402
from offrl.networks import polyak_update  # noqa: E402
from offrl.train import LoopState, make_train_chunk  # noqa: E402

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


def network_checkpoints(env: GridWorld, buffer: ReplayBuffer, updates: int, every: int) -> list[float]:
    """Success rate of `agents/fb.py` after every `every` updates."""
    agent = FBAgent.create(NETWORK_CONFIG, buffer.sample(jax.random.PRNGKey(0), 2), jax.random.PRNGKey(0))
    state = LoopState.initial(agent, jax.random.PRNGKey(1), env.num_states)
    train_chunk = make_train_chunk(FBAgent, every)
    observations = jnp.eye(env.num_states)
    successes = []
    for _ in range(updates // every):
        state, _ = train_chunk(state, buffer)
        successes.append(goal_reaching_success(env, np.asarray(goal_policies(state.agent, observations, observations))))
    return successes


def table_checkpoints(env: GridWorld, buffer: ReplayBuffer, updates: int, every: int, learning_rate: float) -> list[float]:
    """Success rate of FB with free F and B tables after every `every` updates."""
    config = {**DEFAULT_CONFIG, **NETWORK_CONFIG}
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
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=2_500)
    parser.add_argument("--table-lr", type=float, default=0.03)
    args = parser.parse_args(argv)
    if args.updates % args.every:
        parser.error(f"--updates ({args.updates}) must be a multiple of --every ({args.every})")
    env = GridWorld(FOUR_ROOMS)
    buffer = ReplayBuffer.from_transitions(collect_uniform_dataset(env, num_steps=50_000, seed=0))
    start = time.perf_counter()
    network = network_checkpoints(env, buffer, args.updates, args.every)
    network_seconds = time.perf_counter() - start
    table = table_checkpoints(env, buffer, args.updates, args.every, args.table_lr)
    table_seconds = time.perf_counter() - start - network_seconds
    print(f"four-rooms goal reaching, z = B(goal), within 1.5x the shortest path (target 0.95); "
          f"network {network_seconds:.0f} s, table {table_seconds:.0f} s")
    print("| updates | network F (agents/fb.py) | table F | network / table |")
    print("|---|---|---|---|")
    for i, (net, tab) in enumerate(zip(network, table)):
        print(f"| {(i + 1) * args.every} | {net:.3f} | {tab:.3f} | {net / max(tab, 1e-9):.2f} |")


if __name__ == "__main__":
    main()
