"""The cost of one FB update against one IQL update, equal width and batch, in one run.

Both agents train on the same pointmaze data (`offrl/pointmaze/<maze>-v1`) through the
loop's own fused chunk (`offrl.loop.make_train_chunk`: batch sampling and `--chunk`
updates in one jitted `lax.scan`), so the numbers are what a training run pays per update.
FB is at its pointmaze preset (`offrl/presets/fb/pointmaze.yaml`) with F, B and the actor
`--width` wide; IQL is `--iql-agent` (default iql-ddpg, the extraction FB is compared
against on the mazes) with value, critic and actor MLPs `--width` x `--width`. Rounds are
interleaved (IQL, FB, IQL, FB, ...) and the median round of each is reported, because the
machine this runs on is shared; the ratio is FB's time per update over IQL's, in wall time
and in the process's CPU time (all threads), which the other jobs of a shared machine move
less. For a steadier CPU-time ratio on a busy machine, run XLA on one thread:
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".

`--breakdown` also times the parts of one FB update on one fixed batch, each jitted alone
(so they do not add up to the fused update exactly: no fusion across parts):
  target     the bootstrapped target: actor at s', target F at (s', a'), target B at s',
             and the N x N target measure
  fb grad    gradient of the measure loss plus the orthonormality loss wrt F and B
  measure    that gradient's N x N part alone (measure and orthonormality losses on given
             F, B and targets), the batch-by-batch matrices
  actor grad gradient of the actor loss (actor, then F at the actor's action)

    python benchmarks/fb_update_cost.py [--widths 128,256] [--batches 256,1024] [--breakdown]
    python benchmarks/fb_update_cost.py --set forward_arch=bilinear   # an FB override
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from offrl.agents.fb import FBAgent, measure_loss, orthonormality_loss
from offrl.buffer import ReplayBuffer
from offrl.config import parse_overrides
from offrl.data.pointmaze import pointmaze_dataset_id
from offrl.loop import LoopState, make_train_chunk
from offrl.experiment import load_data, resolve


def make_state(agent: str, dataset: str, width: int, batch_size: int, overrides: dict[str, Any]) -> tuple[type, LoopState, Any]:
    """The agent class, a fresh loop state at seed 0 and the experiment's transitions."""
    if agent == "fb":
        sizes = {"hidden_dim": width, "feature_dim": width, "backward_hidden_dim": width}
    else:
        sizes = {"hidden_dims": (width, width)}
    experiment = resolve({"agent": agent, "dataset": dataset, "batch_size": batch_size, "wandb.mode": "disabled",
                             **sizes, **overrides})
    experiment = load_data(experiment)
    transitions = experiment.transitions
    example = transitions[np.arange(min(len(transitions), 10_000))].as_dict()
    return experiment.agent_cls, experiment.initial_state(example), transitions


def seconds_per_update(train_chunk: Callable, state: LoopState, buffer: ReplayBuffer, updates: int, chunk: int) -> tuple[float, float]:
    """(wall, CPU) seconds per update. CPU time is the process's, all threads: on a shared
    machine it moves less with the other jobs than wall time does."""
    calls = max(1, updates // chunk)
    jax.block_until_ready(state)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        state, _ = train_chunk(state, buffer)
    jax.block_until_ready(state)
    return (time.perf_counter() - wall) / (calls * chunk), (time.process_time() - cpu) / (calls * chunk)


def seconds_per_call(fn: Callable, args: tuple, calls: int) -> float:
    """CPU seconds per call (see seconds_per_update)."""
    jax.block_until_ready(fn(*args))  # compile
    started = time.process_time()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.process_time() - started) / calls


def fb_breakdown(agent: FBAgent, batch: dict[str, jax.Array], calls: int) -> dict[str, float]:
    """CPU milliseconds per call of each part of an FB update (module docstring)."""
    key = jax.random.PRNGKey(0)
    B = agent.backward_values(batch["next_observations"])
    z = agent._training_z(key, B)
    target_M = agent._target_measure(batch, z, key)
    F = agent.forward_values(batch["observations"], z, batch["actions"])
    discounts = agent.config.gamma * (1.0 - batch["terminals"])

    def n_by_n(F: jax.Array, B: jax.Array) -> jax.Array:
        return measure_loss(F, B, target_M, discounts)[0] + orthonormality_loss(B)[0]

    parts = {
        "full update": (jax.jit(FBAgent.update), (agent, batch)),
        "target": (jax.jit(FBAgent._target_measure), (agent, batch, z, key)),
        "fb grad": (jax.jit(jax.grad(lambda forward, backward: agent.fb_loss(
            forward, agent.backward_values(batch["next_observations"], params=backward), batch, z, target_M)[0], argnums=(0, 1))),
            (agent.forward.params, agent.backward.params)),
        "measure (N x N)": (jax.jit(jax.grad(n_by_n, argnums=(0, 1))), (F, B)),
    }
    if agent.actor is not None:
        parts["actor grad"] = (jax.jit(jax.grad(agent.actor_loss, has_aux=True)), (agent.actor.params, batch["observations"], z, key))
    return {name: 1e3 * seconds_per_call(fn, args, calls) for name, (fn, args) in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maze", default="umaze")
    parser.add_argument("--dataset-steps", type=int, default=None, help="dataset size (default: the maze's default)")
    parser.add_argument("--widths", default="128", help="comma-separated network widths")
    parser.add_argument("--batches", default="256", help="comma-separated batch sizes")
    parser.add_argument("--iql-agent", default="iql-ddpg")
    parser.add_argument("--updates", type=int, default=500, help="updates per round")
    parser.add_argument("--chunk", type=int, default=100, help="updates per jitted call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of one FB update")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an FB config override; repeatable")
    args = parser.parse_args(argv)
    fb_overrides = parse_overrides([f"--{item}" for item in args.set])
    dataset = pointmaze_dataset_id(args.maze, steps=args.dataset_steps)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {dataset}, FB overrides {fb_overrides or 'none'}, "
          f"{args.updates} updates x {args.rounds} rounds (interleaved), median round reported")
    rows, breakdowns = [], []
    for width in (int(w) for w in args.widths.split(",")):
        for batch_size in (int(b) for b in args.batches.split(",")):
            runs = {}
            buffer = None
            for name, overrides in ((args.iql_agent, {}), ("fb", fb_overrides)):
                cls, state, transitions = make_state(name, dataset, width, batch_size, overrides)
                buffer = buffer or ReplayBuffer.from_transitions(transitions)
                train_chunk = make_train_chunk(cls, args.chunk)
                jax.block_until_ready(train_chunk(state, buffer))  # compile
                runs[name] = (train_chunk, state, [])
            for _ in range(args.rounds):
                for train_chunk, state, times in runs.values():
                    times.append(seconds_per_update(train_chunk, state, buffer, args.updates, args.chunk))
            medians = {name: [1e3 * statistics.median(column) for column in zip(*runs[name][2])] for name in runs}
            rows.append((width, batch_size, medians[args.iql_agent], medians["fb"]))
            if args.breakdown:
                fb_state = runs["fb"][1]
                batch = buffer.sample(jax.random.PRNGKey(0), batch_size)
                breakdowns.append((width, batch_size, fb_breakdown(fb_state.agent, batch, max(20, args.updates // 5))))
    print(f"\n| width | batch | wall ms per update: {args.iql_agent} | FB | FB / IQL | CPU ms per update: {args.iql_agent} | FB "
          "| FB / IQL |")
    print("|---|---|---|---|---|---|---|---|")
    for width, batch_size, (iql_wall, iql_cpu), (fb_wall, fb_cpu) in rows:
        print(f"| {width} | {batch_size} | {iql_wall:.2f} | {fb_wall:.2f} | {fb_wall / iql_wall:.2f}x | {iql_cpu:.2f} | {fb_cpu:.2f} "
              f"| **{fb_cpu / iql_cpu:.2f}x** |")
    for width, batch_size, parts in breakdowns:
        print(f"\nFB update parts, width {width}, batch {batch_size} (CPU ms per call, each part jitted alone):")
        for name, ms in parts.items():
            print(f"  {name:<16} {ms:7.2f}")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
