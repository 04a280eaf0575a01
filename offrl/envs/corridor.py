"""The short corridor with switched actions (Sutton & Barto, Example 13.1).

Three non-terminal states and a goal on the right. In the first and third states the
actions move as labelled; in the second they are reversed (right moves left). Every step
costs -1 and nothing distinguishes the states to the agent: the observation is the same
constant in all of them. Under that aliasing the best policy is stochastic: it picks
right with probability 2 - sqrt(2) for an expected return of -(6 + 4 sqrt(2)) ~ -11.66
(gamma 1), which makes the environment an exact check for policy-gradient agents.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "ShortCorridor-v0"
LEFT, RIGHT = 0, 1
GOAL = 3
OPTIMAL_RIGHT_PROBABILITY = 2.0 - np.sqrt(2.0)


def expected_return(right_probability: float | np.ndarray) -> float | np.ndarray:
    """The start state's value (gamma 1) of picking right with probability p everywhere.

    Solving the three Bellman equations gives v(s0) = 2 (p - 2) / (p (1 - p)).
    """
    p = right_probability
    return 2.0 * (p - 2.0) / (p * (1.0 - p))


class ShortCorridorEnv(gym.Env):
    """States 0, 1, 2 and the goal 3; the action is reversed in state 1. Observation: [1.0]."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        # Only 1.0 ever occurs; a degenerate Box (low == high) would make gymnasium warn.
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.state = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = 0
        return self._observation(), {"state": self.state}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = 1 if int(action) == RIGHT else -1
        if self.state == 1:
            move = -move
        self.state = max(0, self.state + move)
        return self._observation(), -1.0, self.state == GOAL, False, {"state": self.state}

    def _observation(self) -> np.ndarray:
        return np.ones(1, np.float32)


# Episodes under near-optimal policies average under 12 steps and the chance of one lasting
# 500 is negligible, so the time limit (which online collection needs) does not bias the check.
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=ShortCorridorEnv, max_episode_steps=500)
