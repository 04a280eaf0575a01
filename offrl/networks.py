"""Networks and policy heads shared by every agent."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


INITS = ("glorot", "orthogonal")


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def kernel_init(init: str, scale: float = 1.0, hidden: bool = False) -> nn.initializers.Initializer:
    """`glorot`: jaxrl_m's fan-avg uniform, `scale` as given. `orthogonal`: the IQL authors'
    orthogonal init, gain sqrt(2) for hidden (ReLU-family) layers and `scale` for output layers."""
    if init == "glorot":
        return default_init(scale)
    if init == "orthogonal":
        return nn.initializers.orthogonal(jnp.sqrt(2.0) if hidden else scale)
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.gelu
    activate_final: bool = False
    layer_norm: bool = False
    final_init_scale: float = 1.0
    init_scheme: str = "glorot"
    dropout_rate: float = 0.0  # after each activation, only when called with train=True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, size in enumerate(self.hidden_dims):
            last = i + 1 == len(self.hidden_dims)
            scale = self.final_init_scale if last else 1.0
            x = nn.Dense(size, kernel_init=kernel_init(self.init_scheme, scale, hidden=not last or self.activate_final))(x)
            if not last or self.activate_final:
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
                x = self.activation(x)
                if self.dropout_rate > 0:
                    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
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


STD_PARAMETRIZATIONS = ("state", "parameter", "bounded_parameter")


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian over actions; the mean is a state-dependent head (tanh-bounded by default).

    The log std is, by `std_parametrization`:
      state:             a state-dependent linear head, clipped to [log_std_min, log_std_max] (jaxrl_m);
      parameter:         a state-independent parameter, clipped likewise (the IQL authors' code);
      bounded_parameter: log_std_min + sigmoid(p) * (log_std_max - log_std_min), p state-independent
                         and 0 at init (d3rlpy's `use_std_parameter`), so its gradient never vanishes.
    `state_dependent_std=False` is kept as the spelling of `parameter` other agents use."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = True
    tanh_mean: bool = True
    std_parametrization: str | None = None  # overrides state_dependent_std when given
    init_scheme: str = "glorot"
    final_init_scale: float = 1e-2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0, train: bool = False) -> distrax.Distribution:
        features = MLP(self.hidden_dims, activate_final=True, init_scheme=self.init_scheme, dropout_rate=self.dropout_rate)(
            observations, train=train
        )
        means = nn.Dense(self.action_dim, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)
        if self.tanh_mean:
            means = jnp.tanh(means)
        parametrization = self.std_parametrization or ("state" if self.state_dependent_std else "parameter")
        if parametrization == "state":
            log_stds = nn.Dense(self.action_dim, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)
            log_stds = jnp.clip(log_stds, self.log_std_min, self.log_std_max)
        elif parametrization == "parameter":
            log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
            log_stds = jnp.broadcast_to(jnp.clip(log_stds, self.log_std_min, self.log_std_max), means.shape)
        elif parametrization == "bounded_parameter":
            raw = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
            log_stds = self.log_std_min + nn.sigmoid(raw) * (self.log_std_max - self.log_std_min)
            log_stds = jnp.broadcast_to(log_stds, means.shape)
        else:
            raise ValueError(f"std_parametrization must be one of {', '.join(STD_PARAMETRIZATIONS)}, got {parametrization!r}")
        return distrax.MultivariateNormalDiag(loc=means, scale_diag=jnp.exp(log_stds) * temperature)


class DeterministicPolicy(nn.Module):
    """mu(s) before squashing; callers apply tanh (training, evaluation) or clip (evaluation)."""

    hidden_dims: Sequence[int]
    action_dim: int
    init_scheme: str = "glorot"
    final_init_scale: float = 1e-2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array, train: bool = False) -> jax.Array:
        features = MLP(self.hidden_dims, activate_final=True, init_scheme=self.init_scheme, dropout_rate=self.dropout_rate)(
            observations, train=train
        )
        return nn.Dense(self.action_dim, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)


class CategoricalPolicy(nn.Module):
    """A categorical distribution over `num_tokens` discrete actions (tokens)."""

    hidden_dims: Sequence[int]
    num_tokens: int
    init_scheme: str = "glorot"
    final_init_scale: float = 1e-2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0, train: bool = False) -> distrax.Categorical:
        features = MLP(self.hidden_dims, activate_final=True, init_scheme=self.init_scheme, dropout_rate=self.dropout_rate)(
            observations, train=train
        )
        logits = nn.Dense(self.num_tokens, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)
        return distrax.Categorical(logits=logits / temperature)


class FactorizedCategoricalPolicy(nn.Module):
    """One categorical per action dimension (per-dimension bins): logits [..., dims, bins]."""

    hidden_dims: Sequence[int]
    action_dim: int
    num_bins: int
    init_scheme: str = "glorot"
    final_init_scale: float = 1e-2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0, train: bool = False) -> distrax.Distribution:
        features = MLP(self.hidden_dims, activate_final=True, init_scheme=self.init_scheme, dropout_rate=self.dropout_rate)(
            observations, train=train
        )
        logits = nn.Dense(self.action_dim * self.num_bins, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(
            features
        )
        logits = logits.reshape(*logits.shape[:-1], self.action_dim, self.num_bins)
        return distrax.Independent(distrax.Categorical(logits=logits / temperature), reinterpreted_batch_ndims=1)


def apply(network: Any, *inputs: Any, params: Any = None, **kwargs: Any) -> Any:
    """The network of a `TrainState` on `inputs`. Gradients reach only `params` when given
    (the parameters a loss trains); by default the network's own parameters are used with
    gradients stopped, so a loss cannot train a network it only reads (FQL's `select`)."""
    params = jax.lax.stop_gradient(network.params) if params is None else params
    return network.apply_fn({"params": params}, *inputs, **kwargs)


def polyak_update(online: dict, target: dict, tau: float) -> dict:
    """target <- tau * online + (1 - tau) * target, leaf by leaf."""
    return jax.tree_util.tree_map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


def _adam(learning_rate: Any) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def _cosine_adam(learning_rate: Any, decay_steps: int) -> optax.GradientTransformation:
    """Adam with the learning rate decayed to 0 over `decay_steps` (optax's cosine schedule,
    the same function as with a constant peak; here the peak is an array of the state)."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, decay_steps))


def adam_optimizer(learning_rate: float, schedule: str = "constant", decay_steps: int = 1) -> optax.GradientTransformation:
    """Adam whose (peak) learning rate is a leaf of the optimizer state (`opt_state.hyperparams`),
    not a compiled constant, so runs with different rates share one program (--vmap)."""
    if schedule == "cosine":
        return optax.inject_hyperparams(_cosine_adam, static_args="decay_steps")(learning_rate, decay_steps)
    if schedule == "constant":
        return optax.inject_hyperparams(_adam)(learning_rate)
    raise ValueError(f"learning-rate schedule must be 'cosine' or 'constant', got {schedule!r}")
