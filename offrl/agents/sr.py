"""Tabular successor representation of a fixed policy, learned by batched TD.

Convention. The agent learns the state-action table M[s, a, s*] with the Bellman equation

    M(s, a, .) = e_s + gamma * E_{s' ~ P(.|s, a), a' ~ pi(.|s')} M(s', a', .)     ("current")

so the state SR M_pi(s, .) = sum_a pi(a|s) M(s, a, .) equals (I - gamma P_pi)^-1: it counts
the current state at t = 0, V = M_pi r is the value of a state reward r(s), and with
gamma = 0 it is the identity. With `convention="next"` the indicator is e_{s'} instead,
counting states from t = 1 as FB's successor measure does: then M(s, a, .) =
P(.|s, a) (I - gamma P_pi)^-1, with gamma = 0 the one-step model P(s'|s, a).

Learning the state-action table (rather than M(s, .) directly) makes the update exact in
expectation over a' ~ pi, so the data may come from any behaviour policy that covers
every (s, a). With deterministic dynamics the TD target then has no sampling noise.
`normalized=True` learns (1 - gamma) M instead, whose rows are probability distributions
(the gamma-model form); `state_values` undoes the factor so values never depend on it.

Observations must be one-hot state vectors (as `collect_uniform_dataset` stores them);
actions are the action index stored as a float [N, 1] column.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from offrl.config import config_class, option


@config_class
class SRConfig:
    """The hyperparameters (the Bellman equation they enter: the module docstring)."""

    gamma: float = option(0.9, "discount of the successor representation", ge=0, le=1)
    batch_size: int = option(4096, "dataset transitions per update", ge=1)
    # A plain step towards the per-(s, a) mean TD target; linearly decayed to
    # `learning_rate_end` over `decay_steps` (equal values keep it constant). Large
    # steps are fine because the target is an expectation, not a sample, over a'.
    learning_rate: float = option(0.5, "step towards the per-(s, a) mean TD target, at update 0", gt=0)
    learning_rate_end: float = option(
        0.5, "the step size after decay_steps (linear decay; equal values keep it constant)", ge=0
    )
    decay_steps: int = option(1, "updates over which learning_rate decays to learning_rate_end", ge=1)
    normalized: bool = option(False, "learn (1 - gamma) M, whose rows are probability distributions (the gamma-model form)")
    convention: str = option(
        "current", "current (M counts s at t = 0) | next (counts states from t = 1, as FB does)", choices=("current", "next")
    )
    num_actions: int = option(4, "number of discrete actions (the table's second axis)", ge=0)
    policy: tuple[tuple[float, ...], ...] | None = option(
        None, "pi[s][a] as nested tuples (hashable); null means uniformly random"
    )


Batch = dict[str, jax.Array]


def td_targets(successor: jax.Array, policy: jax.Array, batch: Batch, config: Any) -> jax.Array:
    """Per-row TD target: indicator + gamma * sum_a' pi(a'|s') M(s', a', .)."""
    gamma = config.gamma
    states = jnp.argmax(batch["observations"], axis=-1)
    next_states = jnp.argmax(batch["next_observations"], axis=-1)
    num_states = successor.shape[0]
    indicator = jax.nn.one_hot(next_states if config.convention == "next" else states, num_states)
    if config.normalized:
        indicator = (1.0 - gamma) * indicator
    next_rows = jnp.einsum("na,nas->ns", policy[next_states], successor[next_states])
    continues = 1.0 - batch["terminals"][:, None]
    return indicator + gamma * continues * next_rows


def td_loss(params: dict, target_successor: jax.Array, policy: jax.Array, batch: Batch, config: Any) -> tuple[jax.Array, dict]:
    """Squared TD error, each (s, a) weighted by 1 / its count in the batch.

    The weighting makes the gradient for a visited (s, a) the mean TD error over its
    rows, so one SGD step of size lr moves M(s, a) a fraction lr towards the mean target
    however often (s, a) was drawn: the classic tabular update, batched without
    overshooting on duplicates.
    """
    successor = params["successor"]
    num_states, num_actions = successor.shape[:2]
    states = jnp.argmax(batch["observations"], axis=-1)
    actions = batch["actions"][:, 0].astype(jnp.int32)
    pair = states * num_actions + actions
    counts = jnp.zeros(num_states * num_actions).at[pair].add(1.0)[pair]
    targets = jax.lax.stop_gradient(td_targets(target_successor, policy, batch, config))
    errors = successor[states, actions] - targets
    loss = 0.5 * jnp.sum(jnp.sum(errors**2, axis=-1) / counts)
    return loss, {"critic/td_loss": loss / states.shape[0], "critic/td_error_max": jnp.max(jnp.abs(errors))}


class SRAgent(flax.struct.PyTreeNode):
    """Successor table M[s, a, s*] of a fixed policy, plus an optional reward to act on.

    `sample_actions` follows the fixed policy; after `with_reward(r)` it acts greedily on
    Q_r(s, a) = M(s, a, .) r, which is one step of policy improvement over pi.
    """

    state: TrainState
    policy: jax.Array  # pi[s, a]
    reward: jax.Array | None
    config: SRConfig
    config_class = SRConfig

    @classmethod
    def create(cls, config: SRConfig, example_batch: Batch, key: jax.Array) -> SRAgent:
        del key  # the table starts at zero; nothing is random
        num_states = example_batch["observations"].shape[-1]
        num_actions = config.num_actions
        if config.policy is None:
            policy = jnp.full((num_states, num_actions), 1.0 / num_actions)
        else:
            policy = jnp.asarray(config.policy, jnp.float32)
            if policy.shape != (num_states, num_actions):
                raise ValueError(f"policy has shape {policy.shape}, expected {(num_states, num_actions)}")
        schedule = optax.linear_schedule(config.learning_rate, config.learning_rate_end, config.decay_steps)
        params = {"successor": jnp.zeros((num_states, num_actions, num_states))}
        state = TrainState.create(apply_fn=None, params=params, tx=optax.sgd(schedule))
        return cls(state=state, policy=policy, reward=None, config=config)

    def update(self, batch: Batch) -> tuple[SRAgent, dict]:
        grad_fn = jax.grad(td_loss, has_aux=True)
        grads, info = grad_fn(self.state.params, self.state.params["successor"], self.policy, batch, self.config)
        return self.replace(state=self.state.apply_gradients(grads=grads)), info

    def state_action_successor(self) -> jax.Array:
        """M[s, a, s*] as learned (times (1 - gamma) when normalized)."""
        return self.state.params["successor"]

    def successor_matrix(self) -> jax.Array:
        """M_pi[s, s*] = sum_a pi(a|s) M[s, a, s*] (times (1 - gamma) when normalized)."""
        return jnp.einsum("sa,sat->st", self.policy, self.state.params["successor"])

    def _value_scale(self) -> float:
        return 1.0 / (1.0 - self.config.gamma) if self.config.normalized else 1.0

    def state_values(self, reward: jax.Array) -> jax.Array:
        """V_pi = M_pi r for a state reward r[s*] (per the module's convention)."""
        return self._value_scale() * self.successor_matrix() @ reward

    def q_values(self, reward: jax.Array) -> jax.Array:
        """Q_pi[s, a] = M[s, a, .] r."""
        return self._value_scale() * self.state.params["successor"] @ reward

    def with_reward(self, reward: jax.Array | np.ndarray | None) -> SRAgent:
        """Act greedily on Q_r from now on (None: back to following pi)."""
        return self.replace(reward=None if reward is None else jnp.asarray(reward, jnp.float32))

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """Action indices (int32, shape observations.shape[:-1]).

        Without a reward: a ~ pi(.|s), or pi's most likely action when deterministic.
        With one: argmax_a Q_r(s, a).
        """
        states = jnp.argmax(observations, axis=-1)
        if self.reward is not None:
            return jnp.argmax(self.q_values(self.reward)[states], axis=-1).astype(jnp.int32)
        probs = self.policy[states]
        if deterministic:
            return jnp.argmax(probs, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(jnp.int32)
