"""How throughput scales with the number of seeds trained together (`--num-seeds K`).

Each K runs the training loop's own multi-seed update (`make_seeds_train_chunk`: the
fused update vmapped over a leading seed axis, the seed axis sharded when there are
several devices) and reports total updates/s (updates x seeds / s) and the per-seed
ratio against K = 1 measured in the same run. On a CPU the update is compute-bound, so
the total stays roughly flat and each seed slows about K-fold; on a GPU small networks
leave the device mostly idle and the total grows nearly K-fold.

    python benchmarks/seeds_scaling.py [--seeds 1,2,4,8] [--updates 1000] [--rounds 3] [--hidden 256,256]
        [--vmap expectile=0.6,0.7,0.8,0.9]

`--vmap` batches hyperparameter values with the seeds, as `train.py --vmap` does: each row
then trains (values x seeds) members, one state per combination and seed (offrl/vmap.py).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from offrl.buffer import ReplayBuffer
from offrl.loop import LoopState, make_seeds_train_chunk, replicate, shard_seeds, stack_states
from offrl.vmap import combinations, parse_vmap

from train_speed import make_agent, synthetic_transitions


def seed_states(cls, transitions, hidden: tuple[int, ...], num_seeds: int, agent_name: str,
                grid: dict | None = None) -> LoopState:
    """One state per (combination of `grid`, seed), combination-major, stacked."""
    states = []
    for combination in combinations(grid or {}):
        for seed in range(num_seeds):
            _, agent = make_agent(agent_name, hidden, transitions, seed, **combination)
            states.append(LoopState.initial(agent, jax.random.PRNGKey(seed + 100), transitions.observations.shape[-1]))
    return shard_seeds(stack_states(states))


def time_seeds(train_chunk, state: LoopState, buffer: ReplayBuffer, updates: int, chunk: int) -> float:
    """Updates per second of one seed (the chunk advances every seed by `chunk` updates)."""
    state, _ = train_chunk(state, buffer)  # compile
    jax.block_until_ready(state)
    calls = max(1, updates // chunk)
    started = time.perf_counter()
    for _ in range(calls):
        state, _ = train_chunk(state, buffer)
    jax.block_until_ready(state)
    return calls * chunk / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,4,8")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--agent", default="iql-ddpg")
    parser.add_argument("--vmap", default=None, help="hyperparameter values batched with the seeds, e.g. expectile=0.6,0.7")
    args = parser.parse_args()
    grid = parse_vmap(args.vmap)
    combos = len(combinations(grid))
    hidden = tuple(int(x) for x in args.hidden.split(","))
    transitions = synthetic_transitions(args.rows, 17, 6)
    buffer = replicate(ReplayBuffer.from_transitions(transitions))
    counts = [int(k) for k in args.seeds.split(",")]
    cls, _ = make_agent(args.agent, hidden, transitions)
    train_chunk = make_seeds_train_chunk(cls, args.chunk)
    print(f"devices: {len(jax.devices())} x {jax.devices()[0].device_kind} ({jax.default_backend()}), {args.agent}, "
          f"hidden {hidden}, batch 256, {args.updates} updates per seed x {args.rounds} rounds, best round reported"
          f"{f', {combos} combinations of {list(grid)} per seed' if grid else ''}")
    per_seed = {}
    for num_seeds in counts:
        state = seed_states(cls, transitions, hidden, num_seeds, args.agent, grid)
        # The chunk donates the state it is given, so each round starts from its own copy.
        per_seed[num_seeds] = max(time_seeds(train_chunk, jax.tree_util.tree_map(jnp.copy, state), buffer, args.updates,
                                             args.chunk) for _ in range(args.rounds))
    base = per_seed[counts[0]]
    print(f"\n| seeds | members | total updates/s | per-member updates/s | per-member ratio vs {counts[0]} seed(s) | total ratio |")
    print("|---|---|---|---|---|---|")
    for num_seeds in counts:
        total = per_seed[num_seeds] * num_seeds * combos
        print(f"| {num_seeds} | {num_seeds * combos} | {total:.0f} | {per_seed[num_seeds]:.0f} | {per_seed[num_seeds] / base:.2f} | "
              f"{total / (base * counts[0] * combos):.2f}x |")


if __name__ == "__main__":
    main()
