"""IQL update throughput: the fused loop (offrl.train) against a one-update-per-jit-call loop.

The per-call baseline is how jaxrl_m and the original IQL train: a batch is sampled with
numpy on the host and `agent.update` is one jitted call per update. The fused loop keeps
the dataset on the device and runs `--chunk` updates (sampling included) in one
`lax.scan`. Both use the same agent, so the ratio isolates the loop. Rounds are
interleaved and the best round of each is reported, since these machines are noisy.

    python benchmarks/train_speed.py [--updates 2000] [--rounds 5] [--hidden 256,256] [--chunk 1000]

Data is synthetic with D4RL HalfCheetah's shapes (17-D observations, 6-D actions, 1M
rows): update cost does not depend on the values. `--steps-1m` also times 1M fused
updates end to end, compile included (the GPU figure in the README).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from offrl.agents import get_agent
from offrl.buffer import ReplayBuffer
from offrl.loop import LoopState, make_train_chunk
from offrl.transitions import make_transitions


def synthetic_transitions(rows: int, obs_dim: int, action_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return make_transitions(
        observations=rng.normal(size=(rows, obs_dim)),
        actions=rng.uniform(-1, 1, size=(rows, action_dim)),
        rewards=rng.normal(size=rows),
        next_observations=rng.normal(size=(rows, obs_dim)),
        terminals=rng.uniform(size=rows) < 0.01,
        episode_ends=(np.arange(rows) % 1000) == 999,
    )


def make_agent(name: str, hidden: tuple[int, ...], transitions, seed: int = 0, **overrides):
    cls, config = get_agent(name)
    config.update(hidden_dims=hidden, **overrides)
    example = transitions[:10_000].as_dict()
    return cls, cls.create(cls.config_class(**config), example, jax.random.PRNGKey(seed))


def time_fused(cls, agent, buffer, updates: int, chunk: int) -> float:
    train_chunk = make_train_chunk(cls, chunk)
    state = LoopState.initial(agent, jax.random.PRNGKey(1), buffer.observation_dim)
    state, _ = train_chunk(state, buffer)  # compile
    jax.block_until_ready(state)
    started = time.perf_counter()
    for _ in range(max(1, updates // chunk)):
        state, info = train_chunk(state, buffer)
    jax.block_until_ready(state)
    return max(1, updates // chunk) * chunk / (time.perf_counter() - started)


def time_per_call(agent, transitions, updates: int, batch_size: int) -> float:
    data = transitions.as_dict()
    rng = np.random.default_rng(0)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")

    def sample():
        indices = rng.integers(0, len(transitions), batch_size)
        return {key: data[key][indices] for key in keys}

    agent, info = agent.update(sample())  # compile
    jax.block_until_ready(agent)
    started = time.perf_counter()
    for _ in range(updates):
        agent, info = agent.update(sample())
    jax.block_until_ready(agent)
    return updates / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--agents", default="iql-awr,iql-ddpg,iql-dawr")
    parser.add_argument("--steps-1m", action="store_true", help="also time 1M fused iql-ddpg updates, compile included")
    args = parser.parse_args()
    hidden = tuple(int(x) for x in args.hidden.split(","))
    transitions = synthetic_transitions(args.rows, 17, 6)
    buffer = ReplayBuffer.from_transitions(transitions)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), hidden {hidden}, batch 256, "
          f"{args.updates} updates x {args.rounds} rounds, best round reported")
    rows = []
    for name in args.agents.split(","):
        cls, agent = make_agent(name, hidden, transitions)
        fused, per_call = [], []
        for _ in range(args.rounds):
            per_call.append(time_per_call(agent, transitions, args.updates, 256))
            fused.append(time_fused(cls, agent, buffer, args.updates, args.chunk))
        rows.append((name, max(per_call), max(fused), float(np.median(per_call)), float(np.median(fused))))
    print(f"\n| agent | per-call updates/s (best / median) | fused updates/s (best / median) | ratio (best) |")
    print("|---|---|---|---|")
    for name, best_call, best_fused, med_call, med_fused in rows:
        print(f"| {name} | {best_call:.0f} / {med_call:.0f} | {best_fused:.0f} / {med_fused:.0f} | {best_fused / best_call:.2f}x |")
    if args.steps_1m:
        cls, agent = make_agent("iql-ddpg", hidden, transitions)
        started = time.perf_counter()
        time_fused(cls, agent, buffer, 1_000_000, 10_000)
        print(f"\n1M fused iql-ddpg updates, compile included: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
