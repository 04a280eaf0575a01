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
from offrl.networks import DeterministicPolicy, GaussianPolicy, adam_optimizer


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


def gaussian_bc_loss(log_probs: jax.Array) -> tuple[jax.Array, dict]:
    loss = -log_probs.mean()
    return loss, {"actor_loss": loss, "log_prob": log_probs.mean()}


def deterministic_bc_loss(policy_actions: jax.Array, data_actions: jax.Array) -> tuple[jax.Array, dict]:
    mse = ((policy_actions - data_actions) ** 2).sum(-1).mean()
    return mse, {"actor_loss": mse, "bc_mse": mse}


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
        if config.policy_head == "gaussian":
            net = GaussianPolicy(
                config.hidden_dims,
                action_dim,
                log_std_min=config.actor_log_std_min,
                log_std_max=config.actor_log_std_max,
                tanh_mean=True,
                std_parametrization="parameter",
            )
        else:
            net = DeterministicPolicy(config.hidden_dims, action_dim)
        actor = TrainState.create(
            apply_fn=net.apply,
            params=net.init(key, observations)["params"],
            tx=adam_optimizer(config.actor_lr, config.actor_lr_schedule, config.max_steps),
        )
        return cls(actor=actor, config=config)

    def loss(self, params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        output = self.actor.apply_fn({"params": params}, batch["observations"])
        if self.config.policy_head == "gaussian":
            loss, info = gaussian_bc_loss(output.log_prob(batch["actions"]))
            return loss, {**info, "policy_std": output.stddev().mean()}
        return deterministic_bc_loss(jnp.tanh(output), batch["actions"])

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
