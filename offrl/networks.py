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
POLICY_HEADS = ("gaussian", "deterministic", "categorical")


class Policy(nn.Module):
    """One MLP trunk (activated last layer, optional dropout when called with train=True) and a head:

      gaussian:      a diagonal Gaussian over `output_dim` action dims, mean tanh-bounded by
                     default; its log std is, by `std_parametrization`:
                       state:             a state-dependent linear head, clipped to [log_std_min, log_std_max] (jaxrl_m);
                       parameter:         a state-independent parameter, clipped likewise (the IQL authors' code);
                       bounded_parameter: log_std_min + sigmoid(p) * (log_std_max - log_std_min), p
                                          state-independent and 0 at init (d3rlpy's `use_std_parameter`).
      deterministic: mu(s) over `output_dim` dims before squashing; callers apply tanh or clip.
      categorical:   a categorical over `output_dim` tokens or, with `bins_per_dim`, one
                     categorical of that many bins per each of `output_dim` action dims.
    `temperature` scales the Gaussian's std and divides the categorical logits."""

    hidden_dims: Sequence[int]
    output_dim: int
    head: str = "gaussian"
    bins_per_dim: int | None = None
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    tanh_mean: bool = True
    std_parametrization: str = "state"
    init_scheme: str = "glorot"
    final_init_scale: float = 1e-2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array, temperature: float = 1.0, train: bool = False) -> distrax.Distribution | jax.Array:
        features = MLP(self.hidden_dims, activate_final=True, init_scheme=self.init_scheme, dropout_rate=self.dropout_rate)(
            observations, train=train
        )
        output_size = self.output_dim * (self.bins_per_dim or 1)
        outputs = nn.Dense(output_size, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)
        if self.head == "deterministic":
            return outputs
        if self.head == "categorical":
            if self.bins_per_dim is None:
                return distrax.Categorical(logits=outputs / temperature)
            logits = outputs.reshape(*outputs.shape[:-1], self.output_dim, self.bins_per_dim)
            return distrax.Independent(distrax.Categorical(logits=logits / temperature), reinterpreted_batch_ndims=1)
        if self.head != "gaussian":
            raise ValueError(f"policy head must be one of {', '.join(POLICY_HEADS)}, got {self.head!r}")
        means = jnp.tanh(outputs) if self.tanh_mean else outputs
        if self.std_parametrization == "state":
            log_stds = nn.Dense(self.output_dim, kernel_init=kernel_init(self.init_scheme, self.final_init_scale))(features)
            log_stds = jnp.clip(log_stds, self.log_std_min, self.log_std_max)
        elif self.std_parametrization == "parameter":
            log_stds = self.param("log_stds", nn.initializers.zeros, (self.output_dim,))
            log_stds = jnp.broadcast_to(jnp.clip(log_stds, self.log_std_min, self.log_std_max), means.shape)
        elif self.std_parametrization == "bounded_parameter":
            raw = self.param("log_stds", nn.initializers.zeros, (self.output_dim,))
            log_stds = self.log_std_min + nn.sigmoid(raw) * (self.log_std_max - self.log_std_min)
            log_stds = jnp.broadcast_to(log_stds, means.shape)
        else:
            raise ValueError(
                f"std_parametrization must be one of {', '.join(STD_PARAMETRIZATIONS)}, got {self.std_parametrization!r}"
            )
        return distrax.MultivariateNormalDiag(loc=means, scale_diag=jnp.exp(log_stds) * temperature)


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
