"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term in the actor loss.

Critic: twin Q trained towards r + discount * (1 - terminal) * min_i Q'_i(s', a'), where
a' = clip(pi'(s') + clip(noise, -actor_noise_clip, actor_noise_clip), -1, 1) comes from the
target actor with Gaussian noise of std `actor_noise` (target policy smoothing).
Actor, every `policy_delay`-th update only (the authors' `total_it % policy_freq == 0`, so
updates 2, 4, ...): -lambda * Q_1(s, pi(s)) + mean((pi(s) - a)^2), lambda = alpha /
stop_grad(mean |Q_1|), with pi = tanh(mu). The target actor and critics move by Polyak
averaging on the same steps. The delay is a `lax.cond` inside the jitted update, so the
training loop's fused `lax.scan` runs this agent as it runs any other.

Follows the authors' code (github.com/sfujim/TD3_BC) where the paper is silent: Q_1 (not
the min) in the actor loss, the BC term a mean over batch and action dimensions. The paper's
state normalization is the run option `normalize_observations` (the td3bc presets set it).
Networks are offrl's shared ones (GELU, fan-avg uniform init), not the paper's ReLU.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from offrl.config import config_class, option
from offrl.losses import ddpg_bc_loss, td_target, twin_q_loss
from offrl.networks import Policy, ValueNetwork, adam_optimizer, apply, polyak_update


@config_class
class TD3BCConfig:
    """The hyperparameters, defaults from the paper (Fujimoto & Gu, 2021, table 4)."""

    hidden_dims: tuple[int, ...] = option((256, 256), "hidden layers of the actor and of each Q head", ge=1)
    actor_lr: float = option(3e-4, "Adam step size of the actor", gt=0, batchable=True)
    critic_lr: float = option(3e-4, "Adam step size of the twin critic", gt=0, batchable=True)
    batch_size: int = option(256, "dataset rows per update", ge=1)
    discount: float = option(0.99, "gamma of the TD target", ge=0, le=1, batchable=True)
    tau: float = option(
        0.005, "Polyak rate of the target actor and critic, applied on actor-update steps", ge=0, le=1, batchable=True
    )
    actor_noise: float = option(0.2, "std of the target policy smoothing noise (the paper's policy noise)", ge=0, batchable=True)
    actor_noise_clip: float = option(
        0.5, "the smoothing noise is clipped to +- this before it is added to the target action", ge=0, batchable=True
    )
    policy_delay: int = option(2, "critic updates per actor and target update (the paper's d)", ge=1)
    alpha: float = option(2.5, "weight of the Q term against BC: lambda = alpha / mean |Q|", gt=0, batchable=True)


def smoothed_target_actions(mean_actions: jax.Array, key: jax.Array, noise: float, noise_clip: float) -> jax.Array:
    """Target policy smoothing: clip(pi'(s') + clip(N(0, noise^2), +-noise_clip), -1, 1)."""
    smoothing = jnp.clip(noise * jax.random.normal(key, mean_actions.shape), -noise_clip, noise_clip)
    return jnp.clip(mean_actions + smoothing, -1.0, 1.0)


class TD3BCAgent(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    target_actor_params: Any
    target_critic_params: Any
    rng: jax.Array  # smoothing noise; split once per update
    config: TD3BCConfig  # its batchable fields are leaves, so --vmap batches alpha like any number
    config_class = TD3BCConfig

    @classmethod
    def create(cls, config: TD3BCConfig, example_batch: dict[str, jax.Array], key: jax.Array) -> TD3BCAgent:
        observations = jnp.asarray(example_batch["observations"][:1])
        actions = jnp.asarray(example_batch["actions"][:1])
        actor_key, critic_key, rng = jax.random.split(key, 3)
        actor_net = Policy(config.hidden_dims, actions.shape[-1], "deterministic")
        critic_net = ValueNetwork(config.hidden_dims, num_heads=2)
        actor_params = actor_net.init(actor_key, observations)["params"]
        critic_params = critic_net.init(critic_key, observations, actions)["params"]
        return cls(
            actor=TrainState.create(apply_fn=actor_net.apply, params=actor_params, tx=adam_optimizer(config.actor_lr)),
            critic=TrainState.create(apply_fn=critic_net.apply, params=critic_params, tx=adam_optimizer(config.critic_lr)),
            target_actor_params=actor_params,
            target_critic_params=critic_params,
            rng=rng,
            config=config,
        )

    def policy(self, actor_params: Any, observations: jax.Array) -> jax.Array:
        return jnp.tanh(apply(self.actor, observations, params=actor_params))

    def actor_loss(self, actor_params: Any, critic: TrainState, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """-lambda * Q_1(s, pi(s)) + mean (pi(s) - a)^2, lambda = alpha / stop_grad(mean |Q_1|)."""
        policy_actions = self.policy(actor_params, batch["observations"])
        q_policy = apply(critic, batch["observations"], policy_actions)[0]
        loss, info = ddpg_bc_loss(q_policy, policy_actions, batch["actions"], q_weight=self.config.alpha, bc_mean_over_action_dims=True)
        return loss, {**info, "actor/lambda": self.config.alpha / (jnp.abs(q_policy).mean() + 1e-6)}

    @jax.jit
    def update(self, batch: dict[str, jax.Array]) -> tuple[TD3BCAgent, dict]:
        config = self.config
        rng, noise_key = jax.random.split(self.rng)
        next_actions = smoothed_target_actions(
            self.policy(self.target_actor_params, batch["next_observations"]),
            noise_key,
            config.actor_noise,
            config.actor_noise_clip,
        )
        next_q = apply(self.critic, batch["next_observations"], next_actions, params=self.target_critic_params).min(0)
        target = td_target(batch, next_q, config.discount)

        def critic_objective(params: Any) -> tuple[jax.Array, dict]:
            return twin_q_loss(apply(self.critic, batch["observations"], batch["actions"], params=params), target)

        critic_grads, critic_info = jax.grad(critic_objective, has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=critic_grads)

        # critic.step counts updates from 1, so the actor moves on updates policy_delay, 2 * policy_delay, ...
        def actor_step() -> tuple[TrainState, Any, Any, dict]:
            grads, info = jax.grad(self.actor_loss, has_aux=True)(self.actor.params, critic, batch)
            actor = self.actor.apply_gradients(grads=grads)
            return (
                actor,
                polyak_update(actor.params, self.target_actor_params, config.tau),
                polyak_update(critic.params, self.target_critic_params, config.tau),
                info,
            )

        def hold() -> tuple[TrainState, Any, Any, dict]:
            # The loss is still reported (forward pass only), so every step logs the same keys.
            _, info = self.actor_loss(self.actor.params, critic, batch)
            return self.actor, self.target_actor_params, self.target_critic_params, info

        actor, target_actor, target_critic, actor_info = jax.lax.cond(critic.step % config.policy_delay == 0, actor_step, hold)
        agent = self.replace(
            actor=actor, critic=critic, target_actor_params=target_actor, target_critic_params=target_critic, rng=rng
        )
        return agent, {**critic_info, **actor_info}

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """tanh(mu(s)) whether deterministic or not: offline, TD3+BC adds no exploration noise."""
        del key
        return self.policy(self.actor.params, observations)
