"""Networks and policy heads shared by every agent."""

from __future__ import annotations

from typing import Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.gelu
    activate_final: bool = False
    layer_norm: bool = False
    final_init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_dims):
            last = i + 1 == len(self.hidden_dims)
            x = nn.Dense(size, kernel_init=default_init(self.final_init_scale if last else 1.0))(x)
            if not last or self.activate_final:
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
                x = self.activation(x)
        return x


class ValueNetwork(nn.Module):
    """V(s) or Q(s, a) (when actions are given) as a scalar; `num_heads` > 1 gives an ensemble
    with a leading head axis, as independent networks computed in one vmapped pass."""

    hidden_dims: Sequence[int]
    num_heads: int = 1
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array | None = None) -> jax.Array:
        inputs = observations if actions is None else jnp.concatenate([observations, actions], axis=-1)
        mlp = MLP
        if self.num_heads > 1:
            mlp = nn.vmap(
                MLP,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=None,
                out_axes=0,
                axis_size=self.num_heads,
            )
        values = mlp((*self.hidden_dims, 1), layer_norm=self.layer_norm)(inputs)
        return values[..., 0]


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian with state-dependent mean and log std (clipped), as in IQL's AWR actor."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = True
    tanh_mean: bool = True

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0) -> distrax.Distribution:
        features = MLP(self.hidden_dims, activate_final=True)(observations)
        means = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(features)
        if self.tanh_mean:
            means = jnp.tanh(means)
        if self.state_dependent_std:
            log_stds = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(features)
        else:
            log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
            log_stds = jnp.broadcast_to(log_stds, means.shape)
        log_stds = jnp.clip(log_stds, self.log_std_min, self.log_std_max)
        return distrax.MultivariateNormalDiag(loc=means, scale_diag=jnp.exp(log_stds) * temperature)


class DeterministicPolicy(nn.Module):
    """mu(s) before squashing; callers apply tanh (training, evaluation) or clip (evaluation)."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        features = MLP(self.hidden_dims, activate_final=True)(observations)
        return nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(features)


class CategoricalPolicy(nn.Module):
    """A categorical distribution over `num_tokens` discrete actions (tokens)."""

    hidden_dims: Sequence[int]
    num_tokens: int

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0) -> distrax.Categorical:
        features = MLP(self.hidden_dims, activate_final=True)(observations)
        logits = nn.Dense(self.num_tokens, kernel_init=default_init(1e-2))(features)
        return distrax.Categorical(logits=logits / temperature)


class FactorizedCategoricalPolicy(nn.Module):
    """One categorical per action dimension (per-dimension bins): logits [..., dims, bins]."""

    hidden_dims: Sequence[int]
    action_dim: int
    num_bins: int

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0) -> distrax.Distribution:
        features = MLP(self.hidden_dims, activate_final=True)(observations)
        logits = nn.Dense(self.action_dim * self.num_bins, kernel_init=default_init(1e-2))(features)
        logits = logits.reshape(*logits.shape[:-1], self.action_dim, self.num_bins)
        return distrax.Independent(distrax.Categorical(logits=logits / temperature), reinterpreted_batch_ndims=1)


def polyak_update(online: dict, target: dict, tau: float) -> dict:
    """target <- tau * online + (1 - tau) * target, leaf by leaf."""
    return jax.tree_util.tree_map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)
