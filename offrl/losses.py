"""The losses agents share, written once: plain functions of arrays returning (loss, info),
the info's keys named by the network the loss trains (value/, critic/, actor/), as FQL and
OGBench log them.

They hold no networks and no optimizers; an agent computes the forward passes (through
`offrl.networks.apply`, which stops gradients into networks the loss must not train) and
passes the outputs here.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp


def expectile_loss(diff: jax.Array, expectile: float | jax.Array) -> jax.Array:
    """Asymmetric squared loss |tau - 1(diff < 0)| * diff^2, elementwise."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def expectile_value_loss(target_q: jax.Array, value: jax.Array, expectile: float | jax.Array) -> tuple[jax.Array, dict]:
    """IQL's value loss: V(s) regressed to an expectile of Q(s, a) over the dataset's actions."""
    loss = expectile_loss(target_q - value, expectile).mean()
    return loss, {"value/loss": loss, "value/v": value.mean()}


def td_target(batch: dict[str, jax.Array], next_value: jax.Array, discount: float | jax.Array) -> jax.Array:
    """r + discount * (1 - terminal) * next_value, with the gradient stopped."""
    return jax.lax.stop_gradient(batch["rewards"] + discount * (1.0 - batch["terminals"]) * next_value)


def twin_q_loss(q: jax.Array, target: jax.Array) -> tuple[jax.Array, dict]:
    """Sum over the Q heads of the mean squared TD error; q: [heads, batch], target: [batch]."""
    loss = ((q - target) ** 2).mean(axis=1).sum()
    return loss, {"critic/loss": loss, "critic/q": q.mean(), "critic/td_target": target.mean()}


def ddpg_bc_loss(
    q_policy: jax.Array,
    policy_actions: jax.Array,
    data_actions: jax.Array,
    q_weight: float | jax.Array = 1.0,
    bc_weight: float | jax.Array = 1.0,
    normalize_q: bool = True,
    bc_mean_over_action_dims: bool = False,
) -> tuple[jax.Array, dict]:
    """-lambda * Q(s, pi(s)) + bc_weight * ||pi(s) - a||^2, averaged over the batch, with
    lambda = q_weight / stop_grad(mean |Q|) when `normalize_q` (TD3+BC's scale-free form),
    else q_weight. The squared error sums over action dimensions, or averages over them
    (`bc_mean_over_action_dims`, the TD3+BC authors' mse). q_policy: [batch], one head."""
    scale = q_weight / jax.lax.stop_gradient(jnp.abs(q_policy).mean() + 1e-6) if normalize_q else q_weight  # Q may start at 0
    bc = squared_action_error(policy_actions, data_actions, bc_mean_over_action_dims)
    loss = -(scale * q_policy).mean() + bc_weight * bc
    return loss, {"actor/loss": loss, "actor/q_policy": q_policy.mean(), "actor/bc_mse": bc}


def squared_action_error(policy_actions: jax.Array, data_actions: jax.Array, mean_over_action_dims: bool = False) -> jax.Array:
    """Behaviour cloning's squared error, summed (or averaged) over action dims, averaged over the batch."""
    squared_error = (policy_actions - data_actions) ** 2
    return squared_error.mean() if mean_over_action_dims else squared_error.sum(-1).mean()


def awr_weights(advantage: jax.Array, temperature: float | jax.Array, max_weight: float | jax.Array) -> jax.Array:
    """exp(temperature * A), clipped above at max_weight."""
    return jnp.minimum(jnp.exp(advantage * temperature), max_weight)


def weighted_log_likelihood_loss(dist: distrax.Distribution, actions: jax.Array, weights: jax.Array) -> tuple[jax.Array, dict]:
    """-mean(w * log pi(a | s)): AWR with its weights, behaviour cloning with weights 1."""
    log_probs = dist.log_prob(actions)
    loss = -(weights * log_probs).mean()
    return loss, {"actor/loss": loss, "actor/awr_weight": jnp.mean(weights), "actor/log_prob": log_probs.mean()}
