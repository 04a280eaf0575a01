"""Evaluation speed: offrl's evaluation against a plain gymnasium vector env, in one run.

The baseline is what any evaluation must pay: `gymnasium.vector.SyncVectorEnv` of N copies
of the env stepping uniformly random actions until every copy has finished one episode.
offrl's evaluation (`offrl.evaluation.evaluate_seeds`, what the training loop and
`scripts/evaluate.py` call) runs the same number of episodes with a freshly created
`iql-awr` agent's policy (its weights do not change the cost). Both are timed after one
warm-up pass (compilation, env construction); the best of `--rounds` interleaved rounds of
each is reported, since these machines are shared and noisy.

    python benchmarks/eval_speed.py [--episodes 10,100] [--envs HalfCheetah-v5,umaze] [--rounds 3]

`umaze` is the umaze evaluation env of the built-in maze datasets (no dataset is built). The last line is the largest ratio measured for
HalfCheetah at 10 episodes: `eval/vector ratio: X` (the target is <= 1.3, on idle cores: the
load average is printed with the table).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any, Callable

import gymnasium as gym
import jax
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from offrl.agents import get_agent
from offrl.envs import flat_dim, make_env, make_eval_vector_env
from offrl.envs.spec import DatasetSpec
from offrl.evaluation import evaluate_seeds
from offrl.loop import LoopState, stack_states


def env_factory(name: str) -> Callable[[], gym.Env]:
    if name == "umaze":
        from offrl.envs.pointmaze import make_pointmaze_env

        return functools.partial(make_pointmaze_env, "umaze")
    return functools.partial(make_env, name)


def eval_spec(name: str, factory: Callable[[], gym.Env]) -> DatasetSpec:
    """What `make_eval_vector_env` takes: only the env factory matters for timing."""
    return DatasetSpec(name=name, family="benchmark", env_factory=factory, ref_min_score=None, ref_max_score=None,
                       goal_conditioned=False)


def time_vector_env(factory: Callable[[], gym.Env], episodes: int, seed: int) -> float:
    """Seconds for `episodes` random-action episodes in a plain SyncVectorEnv (construction excluded)."""
    envs = SyncVectorEnv([factory for _ in range(episodes)], autoreset_mode=AutoresetMode.NEXT_STEP)
    envs.action_space.seed(seed)
    started = time.perf_counter()
    envs.reset(seed=seed)
    active = np.ones(episodes, dtype=bool)
    while active.any():
        _, _, terminations, truncations, _ = envs.step(envs.action_space.sample())
        active &= ~(terminations | truncations)
    elapsed = time.perf_counter() - started
    envs.close()
    return elapsed


def fresh_state(factory: Callable[[], gym.Env], seed: int) -> LoopState:
    env = factory()
    obs_dim = flat_dim(env.observation_space)
    action_dim = int(np.prod(env.action_space.shape))
    env.close()
    cls, config = get_agent("iql-awr")
    rng = np.random.default_rng(seed)
    example = {
        "observations": rng.normal(size=(256, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(256, action_dim)).astype(np.float32),
        "rewards": np.zeros(256, np.float32),
        "next_observations": rng.normal(size=(256, obs_dim)).astype(np.float32),
        "terminals": np.zeros(256, np.float32),
    }
    agent = cls.create(cls.config_class(**config), example, jax.random.PRNGKey(seed))
    return stack_states([LoopState.initial(agent, jax.random.PRNGKey(seed), obs_dim)])


def time_offrl(envs: Any, state: LoopState, episodes: int, seed: int, step: int) -> float:
    started = time.perf_counter()
    evaluate_seeds(envs, state, [seed], episodes, deterministic=True, step=step, record_transitions=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", default="10,100", help="comma-separated episode counts")
    parser.add_argument("--envs", default="HalfCheetah-v5,umaze", help="gymnasium ids, or umaze for the default dataset's env")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = []
    for name in args.envs.split(","):
        factory = env_factory(name)
        state = fresh_state(factory, args.seed)
        for episodes in (int(count) for count in args.episodes.split(",")):
            envs = make_eval_vector_env(eval_spec(name, factory), episodes, args.seed)
            time_offrl(envs, state, episodes, args.seed, step=0)  # compile and warm up
            time_vector_env(factory, episodes, args.seed)
            vector, offrl = [], []
            for round_index in range(args.rounds):
                vector.append(time_vector_env(factory, episodes, args.seed))
                offrl.append(time_offrl(envs, state, episodes, args.seed, step=round_index + 1))
            envs.close()
            rows.append((name, episodes, min(vector), min(offrl)))

    # Timings on shared cores mean little without the load they were taken under.
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores")
    print("| env | episodes | SyncVectorEnv, random actions (s) | offrl evaluation (s) | offrl / vector |")
    print("|---|---|---|---|---|")
    for name, episodes, vector, offrl in rows:
        print(f"| {name} | {episodes} | {vector:.2f} | {offrl:.2f} | {offrl / vector:.2f} |")
    headline = [offrl / vector for name, episodes, vector, offrl in rows if name == "HalfCheetah-v5" and episodes == 10]
    if headline:
        print(f"eval/vector ratio: {max(headline):.2f}")


if __name__ == "__main__":
    main()
