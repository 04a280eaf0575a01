"""Behaviour cloning: the floor of every offline-RL table.

The policy imitates the dataset's actions and nothing else: no reward, no critic. Two heads,
as the peers ship them:
  - gaussian:      maximum likelihood of the data actions under the same Gaussian head as
                   `iql-awr` (state-independent std, tanh on the mean), acting on its mean.
                   It is `iql-awr` with every AWR weight equal to 1, i.e. temperature 0
                   (OGBench's GCBC, jaxrl_m's BC).
  - deterministic: tanh(mu(s)) regressed on the data actions by squared error, the policy of
                   `iql-ddpg` and `td3bc` trained by their BC term alone (CORL's BC).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from offrl.config import config_class, option, run_steps
from offrl.losses import squared_action_error, weighted_log_likelihood_loss
from offrl.networks import Policy, adam_optimizer, apply


@config_class
class BCConfig:
    """The hyperparameters of behaviour cloning (the losses: the module docstring)."""

    policy_head: str = option(
        "gaussian", "gaussian (log-likelihood, acts on its mean) | deterministic (tanh output, squared error)",
        choices=("gaussian", "deterministic"),
    )
    hidden_dims: tuple[int, ...] = option((256, 256), "hidden layers of the policy", ge=1)
    actor_lr: float = option(3e-4, "Adam step size of the policy", gt=0, batchable=True)
    actor_lr_schedule: str = option("constant", "cosine decays to 0 over max_steps", choices=("cosine", "constant"))
    max_steps: int = option(1_000_000, "set by the training loop to the run's number of updates (--steps)", ge=1, derive=run_steps)
    batch_size: int = option(256, "dataset rows per update", ge=1)
    actor_log_std_min: float = option(-5.0, "lower bound of the Gaussian's log std")
    actor_log_std_max: float = option(2.0, "upper bound of the Gaussian's log std")


class BCAgent(flax.struct.PyTreeNode):
    actor: TrainState
    config: BCConfig  # actor_lr is batchable: the optimizer state holds it as an array (--vmap)
    config_class = BCConfig

    @classmethod
    def create(cls, config: BCConfig, example_batch: dict[str, jax.Array], key: jax.Array) -> BCAgent:
        if config.actor_log_std_min >= config.actor_log_std_max:
            raise ValueError("bc config key 'actor_log_std_min' must be below actor_log_std_max")
        observations = example_batch["observations"][:1]
        action_dim = example_batch["actions"].shape[-1]
        net = Policy(
            config.hidden_dims,
            action_dim,
            config.policy_head,
            log_std_min=config.actor_log_std_min,
            log_std_max=config.actor_log_std_max,
            std_parametrization="parameter",
        )
        actor = TrainState.create(
            apply_fn=net.apply,
            params=net.init(key, observations)["params"],
            tx=adam_optimizer(config.actor_lr, config.actor_lr_schedule, config.max_steps),
        )
        return cls(actor=actor, config=config)

    def loss(self, params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        output = apply(self.actor, batch["observations"], params=params)
        if self.config.policy_head == "gaussian":
            loss, info = weighted_log_likelihood_loss(output, batch["actions"], jnp.ones(()))
            return loss, {"actor/loss": loss, "actor/log_prob": info["actor/log_prob"], "actor/policy_std": output.stddev().mean()}
        mse = squared_action_error(jnp.tanh(output), batch["actions"])
        return mse, {"actor/loss": mse, "actor/bc_mse": mse}

    @jax.jit
    def update(self, batch: dict[str, jax.Array]) -> tuple[BCAgent, dict]:
        grads, info = jax.grad(self.loss, has_aux=True)(self.actor.params, batch)
        return self.replace(actor=self.actor.apply_gradients(grads=grads)), info

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        output = self.actor.apply_fn({"params": self.actor.params}, observations)
        if self.config.policy_head == "deterministic":
            return jnp.tanh(output)
        actions = output.mode() if deterministic else output.sample(seed=key)
        return jnp.clip(actions, -1.0, 1.0)
