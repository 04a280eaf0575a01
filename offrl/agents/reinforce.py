"""REINFORCE with a learned state-value baseline (Williams, 1992; Sutton & Barto, ch. 13).

The toolkit's on-policy agent: the online loop (`offrl.online`) collects a batch of whole
episodes with the current policy, writes them into the shared `ReplayBuffer`, and calls
`update` once on all of them. The policy gradient weights log pi(a_t | s_t) by the
Monte-Carlo return-to-go G_t, minus V(s_t) when the baseline is on; V is fitted to the
same returns by regression. Subtracting a state-only baseline leaves the gradient
unbiased, since sum_a b(s) grad pi(a|s) = b(s) grad 1 = 0, and with V close to the
expected return it centres the weights and cuts their variance.

Time limits: a step that ends an episode without terminating it (gymnasium's `truncated`)
is not a terminal. With the baseline on, the return there is bootstrapped with
discount * V(s_T), the value of the state the episode was cut at; this assumes the task
itself has no time limit, which also means discount must be below 1 for tasks that never
terminate by themselves (a balanced pole has unbounded undiscounted value), as the
CartPole and InvertedPendulum presets set. Without the baseline there is no value to
bootstrap with and the return is the sum of rewards up to the limit.

Returns are computed in the loss from the buffer's `rewards`, `terminals` and
`episode_ends` columns (not stored at add time) because the bootstrap uses the current V.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import distrax
import flax
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState
from gymnasium import spaces

from offrl.buffer import ReplayBuffer, discounted_returns_to_go
from offrl.config import config_class, option, run_steps
from offrl.networks import Policy, ValueNetwork

if TYPE_CHECKING:
    from offrl.envs.spec import DatasetSpec


def env_num_actions(config: dict[str, Any], spec: DatasetSpec) -> int:
    """The `derive` hook of `num_actions`: n for the run env's Discrete(n) action space, 0 for a Box."""
    env = spec.env_factory()
    try:
        action_space = env.action_space
    finally:
        env.close()
    return int(action_space.n) if isinstance(action_space, spaces.Discrete) else 0


@config_class
class ReinforceConfig:
    """The hyperparameters (the CartPole and InvertedPendulum presets in offrl/presets/reinforce/ tune them).

    None is batchable: an online agent collects its own episodes, one env stream per run."""

    hidden_dims: tuple[int, ...] = option((64, 64), "hidden layers of the policy and of the value baseline", ge=1)
    actor_lr: float = option(1e-2, "Adam step size of the policy", gt=0)
    value_lr: float = option(1e-2, "Adam step size of the value baseline", gt=0)
    actor_lr_schedule: str = option("constant", "cosine decays to 0 over max_steps", choices=("constant", "cosine"))
    max_steps: int = option(1_000, "set by the training loop to the run's number of updates (--steps)", ge=1, derive=run_steps)
    discount: float = option(1.0, "gamma of the returns; below 1 for tasks that never terminate by themselves", ge=0, le=1)
    baseline: bool = option(True, "learned V(s) baseline (--no-baseline for plain REINFORCE)")
    normalize_advantages: bool = option(False, "standardize over every step of the batch, not per episode")
    entropy_coef: float = option(0.0, "weight of the policy's entropy (summed per episode) subtracted from the loss", ge=0)
    episodes_per_update: int = option(8, "one episode per sub-env of the training vector env", ge=1)
    action_squash: str = option(
        "clip", "continuous actions: clip (Gaussian sample, env clips) | tanh (squashed Gaussian)", choices=("clip", "tanh")
    )
    log_std_init: float = option(
        0.0, "continuous actions: initial log std of the Gaussian (state-independent, learned); 0 is std 1, half the [-1, 1] range"
    )
    num_actions: int = option(
        0, "set from the run's env: n for Discrete(n), 0 for a Box action space", ge=0, derive=env_num_actions
    )


# Keeps atanh finite for squashed actions that rounded to +-1 in float32.
TANH_EPS = 1e-6


def returns_to_go(
    rewards: jax.Array,
    terminals: jax.Array,
    episode_ends: jax.Array,
    discount: float,
    next_values: jax.Array | None = None,
) -> jax.Array:
    """G_t over rows holding whole episodes back to back.

    With `next_values` (V(s_{t+1}), already stop-gradiented), an episode that ends without
    terminating (a time limit) continues as r_T + discount * V(s_{T+1}): adding that term
    to the last reward and discounting backwards is exactly the bootstrapped return.
    """
    if next_values is not None:
        truncated = episode_ends * (1.0 - terminals)
        rewards = rewards + discount * truncated * next_values
    return discounted_returns_to_go(rewards, episode_ends, discount)


def masked_mean(values: jax.Array, masks: jax.Array) -> jax.Array:
    return (values * masks).sum() / jnp.maximum(masks.sum(), 1.0)


def per_episode_sum(values: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
    """Sum over a batch's steps divided by its number of episodes.

    This, not the mean over steps, is the unbiased Monte-Carlo estimate of an expectation
    over episodes: dividing by the batch's step count, which is random and correlated with
    the returns, biases both the policy gradient and the regression target of V (towards
    the returns of batches of short episodes).
    """
    masks = batch["masks"]
    return (values * masks).sum() / jnp.maximum((batch["episode_ends"] * masks).sum(), 1.0)


def compute_advantages(
    batch: dict[str, jax.Array],
    discount: float,
    values: jax.Array | None,
    next_values: jax.Array | None,
    normalize: bool,
) -> tuple[jax.Array, jax.Array]:
    """(returns, advantages) for a batch of episodes; `values` None means no baseline.

    Normalization uses the mean and std over every valid step of the batch, so episodes
    keep their relative standing (per-episode normalization would make every episode look
    half good, half bad).
    """
    returns = returns_to_go(batch["rewards"], batch["terminals"], batch["episode_ends"], discount, next_values)
    advantages = returns if values is None else returns - values
    if normalize:
        masks = batch["masks"]
        mean = masked_mean(advantages, masks)
        std = jnp.sqrt(masked_mean((advantages - mean) ** 2, masks))
        advantages = (advantages - mean) / (std + 1e-8)
    return returns, advantages


class ReinforceAgent(flax.struct.PyTreeNode):
    actor: TrainState
    value: TrainState | None  # None without the baseline
    config: ReinforceConfig

    online: ClassVar[bool] = True
    config_class: ClassVar[type] = ReinforceConfig

    @classmethod
    def create(cls, config: ReinforceConfig, example_batch: dict[str, jax.Array], key: jax.Array) -> ReinforceAgent:
        """A categorical policy when `num_actions` > 0 (Discrete env), else a Gaussian over
        `example_batch["actions"]`'s dimensions, in [-1, 1] (the online env rescales)."""
        observations = jnp.asarray(example_batch["observations"][:1])
        hidden = config.hidden_dims
        actor_key, value_key = jax.random.split(key)
        if config.num_actions > 0:
            actor_net = Policy(hidden, config.num_actions, "categorical")
        else:
            # A state-independent std is the usual choice for on-policy Gaussians: it only
            # shrinks as the policy gets confident overall. The mean is tanh-bounded for
            # clipped actions; for squashed ones the tanh comes after sampling instead.
            actor_net = Policy(
                hidden,
                example_batch["actions"].shape[-1],
                std_parametrization="parameter",
                tanh_mean=config.action_squash == "clip",
            )
        actor_lr = config.actor_lr
        if config.actor_lr_schedule == "cosine":
            actor_lr = optax.cosine_decay_schedule(actor_lr, config.max_steps)
        actor_params = actor_net.init(actor_key, observations)["params"]
        if config.num_actions == 0:
            # Exploration noise of std 1 in [-1, 1] is mostly clipped actions; a smaller start
            # lets the first episodes follow the (near-zero) mean and the gradient shape it.
            actor_params = {**actor_params, "log_stds": jnp.full_like(actor_params["log_stds"], config.log_std_init)}
        actor = TrainState.create(apply_fn=actor_net.apply, params=actor_params, tx=optax.adam(actor_lr))
        value = None
        if config.baseline:
            value_net = ValueNetwork(hidden)
            value = TrainState.create(
                apply_fn=value_net.apply,
                params=value_net.init(value_key, observations)["params"],
                tx=optax.adam(config.value_lr),
            )
        return cls(actor=actor, value=value, config=config)

    @staticmethod
    def sample_batch(buffer: ReplayBuffer, key: jax.Array, config: Any) -> dict[str, jax.Array]:
        """The whole buffer, in order: it holds exactly the latest batch of episodes, and
        returns-to-go need each episode's rows contiguous."""
        return buffer.data

    @property
    def discrete(self) -> bool:
        return self.config.num_actions > 0

    def _log_probs(self, dist: distrax.Distribution, actions: jax.Array) -> jax.Array:
        if self.discrete:
            return dist.log_prob(actions[:, 0].astype(jnp.int32))
        if self.config.action_squash == "tanh":
            squashed = distrax.Transformed(dist, distrax.Block(distrax.Tanh(), ndims=1))
            return squashed.log_prob(jnp.clip(actions, -1.0 + TANH_EPS, 1.0 - TANH_EPS))
        return dist.log_prob(actions)

    def loss(self, params: dict[str, Any], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        config = self.config
        observations, masks = batch["observations"], batch["masks"]
        values = next_values = None
        value_loss = jnp.zeros(())
        if config.baseline:
            n = observations.shape[0]
            both = self.value.apply_fn({"params": params["value"]}, jnp.concatenate([observations, batch["next_observations"]]))
            values, next_values = both[:n], jax.lax.stop_gradient(both[n:])
        returns, advantages = compute_advantages(
            batch,
            config.discount,
            None if values is None else jax.lax.stop_gradient(values),
            next_values,
            config.normalize_advantages,
        )
        if values is not None:
            value_loss = per_episode_sum((returns - values) ** 2, batch)
        dist = self.actor.apply_fn({"params": params["actor"]}, observations)
        log_probs = self._log_probs(dist, batch["actions"])
        policy_loss = -per_episode_sum(advantages * log_probs, batch)
        # For squashed Gaussians the entropy is the pre-tanh one, which has a closed form.
        entropy = masked_mean(dist.entropy(), masks)
        # The bonus is per step, so it scales with episode length like the policy term.
        loss = policy_loss - config.entropy_coef * per_episode_sum(dist.entropy(), batch) + value_loss
        info = {
            "actor/loss": policy_loss,
            "value/loss": value_loss,
            "actor/entropy": entropy,
            "value/return_to_go": masked_mean(returns, masks),
            "actor/advantage": masked_mean(advantages, masks),
            "actor/advantage_abs": masked_mean(jnp.abs(advantages), masks),
        }
        if values is not None:
            info["value/v"] = masked_mean(values, masks)
        if not self.discrete:
            info["actor/policy_std"] = dist.stddev().mean()
        return loss, info

    @jax.jit
    def update(self, batch: dict[str, jax.Array]) -> tuple[ReinforceAgent, dict]:
        params = {"actor": self.actor.params}
        if self.value is not None:
            params["value"] = self.value.params
        grads, info = jax.grad(self.loss, has_aux=True)(params, batch)
        agent = self.replace(actor=self.actor.apply_gradients(grads=grads["actor"]))
        if self.value is not None:
            agent = agent.replace(value=self.value.apply_gradients(grads=grads["value"]))
        return agent, info

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """float32 [N, act_dim]; for Discrete envs the action index as [N, 1].

        Clipped Gaussian samples are returned unclipped: the buffer must keep the sampled
        value for its log-probability to be exact, and the online env clips (ClipAction).
        """
        dist = self.actor.apply_fn({"params": self.actor.params}, observations)
        actions = dist.mode() if deterministic else dist.sample(seed=key)
        if self.discrete:
            return actions.astype(jnp.float32)[..., None]
        if self.config.action_squash == "tanh":
            return jnp.tanh(actions)
        return actions

    def action_probabilities(self, observations: jax.Array) -> jax.Array:
        """pi(. | s) for Discrete envs, for diagnostics (the short-corridor check)."""
        return self.actor.apply_fn({"params": self.actor.params}, observations).probs

    def values(self, observations: jax.Array) -> jax.Array:
        return self.value.apply_fn({"params": self.value.params}, observations)
