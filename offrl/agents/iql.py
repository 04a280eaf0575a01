"""Implicit Q-learning (Kostrikov et al., 2021) with three policy-extraction strategies.

The critic (expectile V, twin Q, Polyak target Q) is shared; the extraction method only
decides the actor head, its loss and how actions are read out:
  - awr:  Gaussian policy, weighted log-likelihood with weights exp(beta * A), clipped.
  - ddpg: deterministic policy, DDPG+BC by default (TD3+BC / FQL style):
          -Q(s, pi(s)) / stop_grad(mean |Q|) + bc_weight * ||pi(s) - a||^2 with
          pi = tanh(mu), Q the min over the twin heads; `--bc_weight 0` is pure DDPG (an
          ablation: it climbs the critic's errors off the data). Evaluated with tanh or clip
          on mu (config `eval_squash`).
  - dawr: actions mapped to tokens (k-means over joint actions, or per-dimension bins)
          and a categorical policy trained with the AWR weights.
All losses are computed from one set of forward passes and differentiated in one
backward pass: V(s) and V(s') come from a single value call, target Q(s, a) is computed
once and shared by the value loss and the AWR weights. Each network still only receives
the gradient of its own loss (`offrl.networks.apply` stops the others), so the update equals running the
three losses separately on the same pre-update parameters, as jaxrl_m does. With
`actor_advantage: post_update` the value step is taken first and the actor's advantage uses
the updated V, the order of the IQL authors' code and d3rlpy (one extra V pass per update).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from offrl.config import config_class, option, run_steps
from offrl.losses import awr_weights, ddpg_bc_loss, expectile_value_loss, td_target, twin_q_loss, weighted_log_likelihood_loss
from offrl.networks import (
    INITS,
    STD_PARAMETRIZATIONS,
    Policy,
    ValueNetwork,
    adam_optimizer,
    apply,
    polyak_update,
)
from offrl.tokenizers import BinTokenizer, KMeansTokenizer, fit_tokenizer

@config_class
class IQLConfig:
    """The hyperparameters of every extraction (the losses they enter: the module docstring)."""

    extraction: str = option("awr", "set by the agent name", choices=("awr", "ddpg", "dawr"))
    hidden_dims: tuple[int, ...] = option((256, 256), "hidden layers of the actor, value and each Q network", ge=1)
    actor_lr: float = option(3e-4, "Adam step size of the actor", gt=0, batchable=True)
    critic_lr: float = option(3e-4, "Adam step size of the twin Q critic", gt=0, batchable=True)
    value_lr: float = option(3e-4, "Adam step size of the value network V", gt=0, batchable=True)
    actor_lr_schedule: str = option("cosine", "cosine decays to 0 over max_steps", choices=("cosine", "constant"))
    max_steps: int = option(1_000_000, "set by the training loop to the run's number of updates (--steps)", ge=1, derive=run_steps)
    batch_size: int = option(256, "dataset rows per update", ge=1)
    discount: float = option(0.99, "gamma of the TD target", ge=0, le=1, batchable=True)
    tau: float = option(0.005, "Polyak rate of the target Q", ge=0, le=1, batchable=True)
    expectile: float = option(
        0.7, "expectile of the value loss (0.5: mean; towards 1: max over dataset actions)", gt=0, lt=1, batchable=True
    )
    temperature: float = option(3.0, "beta in exp(beta * A), the AWR weights", gt=0, batchable=True)
    max_weight: float = option(100.0, "upper clip of the AWR weights exp(beta * A) (.inf: no clipping)", gt=0, batchable=True)
    layer_norm: bool = option(False, "LayerNorm in the value and Q networks")
    # actor (every extraction)
    actor_init: str = option(
        "glorot", "glorot (jaxrl_m fan-avg uniform) | orthogonal (IQL authors: gain sqrt 2, output actor_final_init_scale)",
        choices=INITS,
    )
    actor_final_init_scale: float = option(1e-2, "scale of the output layers' init (jaxrl_m 1e-2; IQL authors 1.0)")
    actor_dropout: float = option(
        0.0, "dropout rate after the actor's hidden activations during training (IQL authors: 0.1 on kitchen)", ge=0, lt=1
    )
    actor_advantage: str = option(
        "pre_update", "pre_update (V before this step, jaxrl_m) | post_update (V after it: IQL authors, d3rlpy)",
        choices=("pre_update", "post_update"),
    )
    # awr
    actor_std: str = option(
        "parameter", "state (state-dependent head, jaxrl_m) | parameter (IQL authors) | bounded_parameter (d3rlpy sigmoid)",
        choices=STD_PARAMETRIZATIONS,
    )
    actor_log_std_min: float = option(-5.0, "lower bound of the Gaussian's log std")
    actor_log_std_max: float = option(2.0, "upper bound of the Gaussian's log std")
    actor_tanh_mean: bool = option(True, "tanh on the Gaussian's mean, so the mode is a valid action (IQL authors, d3rlpy)")
    # ddpg
    bc_weight: float = option(
        0.1, "weight of ||pi(s) - a||^2; 0 is pure DDPG (ablation). Chosen by sweep: docs/iql_presets.md", ge=0, batchable=True
    )
    normalize_q_loss: bool = option(
        True, "divide -Q by stop_grad(mean |Q|), as TD3+BC does, so bc_weight is scale-free"
    )
    eval_squash: str = option("tanh", "applied to the deterministic actor's mean when acting", choices=("tanh", "clip"))
    # dawr
    tokenizer: str = option("kmeans", "kmeans (joint actions) | bins (per dimension)", choices=("kmeans", "bins"))
    num_tokens: int = option(64, "k-means codebook size", ge=1)
    num_bins: int = option(16, "bins per action dimension", ge=1)
    kmeans_iterations: int = option(50, "Lloyd iterations of the k-means tokenizer fit", ge=1)


class IQLAgent(flax.struct.PyTreeNode):
    value: TrainState
    critic: TrainState
    target_critic_params: Any
    actor: TrainState
    tokenizer: KMeansTokenizer | BinTokenizer | None
    rng: jax.Array  # dropout masks; split once per update
    # Batchable fields (option(batchable=True)) are leaves: arrays under --vmap, one program for every value.
    config: IQLConfig
    config_class = IQLConfig

    @classmethod
    def create(cls, config: IQLConfig, example_batch: dict[str, jax.Array], key: jax.Array) -> IQLAgent:
        """`example_batch` is a sample of dataset rows; the dawr tokenizer is fitted on its actions."""
        if config.actor_log_std_min >= config.actor_log_std_max:
            raise ValueError("actor_log_std_min must be below actor_log_std_max")
        observations = example_batch["observations"][:1]
        actions = example_batch["actions"][:1]
        action_dim = actions.shape[-1]
        value_key, critic_key, actor_key, token_key, rng = jax.random.split(key, 5)
        hidden = config.hidden_dims
        head = {"init_scheme": config.actor_init, "final_init_scale": config.actor_final_init_scale,
                "dropout_rate": config.actor_dropout}

        value_net = ValueNetwork(hidden, layer_norm=config.layer_norm)
        critic_net = ValueNetwork(hidden, num_heads=2, layer_norm=config.layer_norm)
        value = TrainState.create(
            apply_fn=value_net.apply,
            params=value_net.init(value_key, observations)["params"],
            tx=adam_optimizer(config.value_lr),
        )
        critic_params = critic_net.init(critic_key, observations, actions)["params"]
        critic = TrainState.create(apply_fn=critic_net.apply, params=critic_params, tx=adam_optimizer(config.critic_lr))

        tokenizer = None
        if config.extraction == "awr":
            actor_net = Policy(
                hidden,
                action_dim,
                "gaussian",
                log_std_min=config.actor_log_std_min,
                log_std_max=config.actor_log_std_max,
                tanh_mean=config.actor_tanh_mean,
                std_parametrization=config.actor_std,
                **head,
            )
        elif config.extraction == "ddpg":
            actor_net = Policy(hidden, action_dim, "deterministic", **head)
        else:
            tokenizer = fit_tokenizer(
                config.tokenizer,
                example_batch["actions"],
                token_key,
                num_tokens=config.num_tokens,
                num_bins=config.num_bins,
                iterations=config.kmeans_iterations,
            )
            binned = isinstance(tokenizer, BinTokenizer)
            output_dim, bins = (action_dim, config.num_bins) if binned else (tokenizer.num_tokens, None)
            actor_net = Policy(hidden, output_dim, "categorical", bins_per_dim=bins, **head)
        actor = TrainState.create(
            apply_fn=actor_net.apply,
            params=actor_net.init(actor_key, observations)["params"],
            tx=adam_optimizer(config.actor_lr, config.actor_lr_schedule, config.max_steps),
        )
        return cls(
            value=value,
            critic=critic,
            target_critic_params=critic_params,
            actor=actor,
            tokenizer=tokenizer,
            rng=rng,
            config=config,
        )

    def total_loss(
        self,
        params: dict[str, Any],
        batch: dict[str, jax.Array],
        target_q: jax.Array,
        actor_value: jax.Array | None,
        dropout_key: jax.Array,
    ) -> tuple[jax.Array, dict]:
        """Value, critic and actor losses from one set of forward passes. `actor_value` is the V(s)
        the advantage uses when it is not this step's pre-update V (None: pre-update)."""
        observations, actions = batch["observations"], batch["actions"]
        batch_size = observations.shape[0]

        both_values = apply(self.value, jnp.concatenate([observations, batch["next_observations"]], axis=0), params=params["value"])
        value, next_value = both_values[:batch_size], both_values[batch_size:]

        v_loss, v_info = expectile_value_loss(target_q, value, self.config.expectile)
        q = apply(self.critic, observations, actions, params=params["critic"])
        q_loss, q_info = twin_q_loss(q, td_target(batch, next_value, self.config.discount))

        advantage = target_q - jax.lax.stop_gradient(value if actor_value is None else actor_value)
        a_loss, a_info = self.actor_loss(params["actor"], batch, advantage, dropout_key)
        info = {**v_info, **q_info, **a_info, "actor/advantage": advantage.mean()}
        return v_loss + q_loss + a_loss, info

    def _actor_apply(self, actor_params: Any, observations: jax.Array, dropout_key: jax.Array | None) -> Any:
        if dropout_key is None or self.config.actor_dropout == 0:
            return apply(self.actor, observations, params=actor_params)
        return apply(self.actor, observations, params=actor_params, train=True, rngs={"dropout": dropout_key})

    def actor_loss(
        self, actor_params: Any, batch: dict[str, jax.Array], advantage: jax.Array, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, dict]:
        config = self.config
        observations, actions = batch["observations"], batch["actions"]
        extraction = config.extraction
        if extraction == "ddpg":
            policy_actions = jnp.tanh(self._actor_apply(actor_params, observations, dropout_key))
            q_policy = apply(self.critic, observations, policy_actions).min(axis=0)
            return ddpg_bc_loss(
                q_policy, policy_actions, actions, bc_weight=self.config.bc_weight, normalize_q=config.normalize_q_loss
            )
        weights = awr_weights(advantage, self.config.temperature, self.config.max_weight)
        dist = self._actor_apply(actor_params, observations, dropout_key)
        if extraction == "awr":
            loss, info = weighted_log_likelihood_loss(dist, actions, weights)
            return loss, {**info, "actor/policy_std": dist.stddev().mean()}
        tokens = self.tokenizer.encode(actions)
        loss, info = weighted_log_likelihood_loss(dist, tokens, weights)
        return loss, {**info, "actor/policy_entropy": dist.entropy().mean()}

    @jax.jit
    def update(self, batch: dict[str, jax.Array]) -> tuple[IQLAgent, dict]:
        config = self.config
        observations = batch["observations"]
        rng, dropout_key = jax.random.split(self.rng)
        # target Q(s, a) is shared by the value loss and the advantage, computed once.
        target_q = apply(self.critic, observations, batch["actions"], params=self.target_critic_params).min(axis=0)
        params = {"value": self.value.params, "critic": self.critic.params, "actor": self.actor.params}
        actor_value = None
        if config.actor_advantage == "post_update":
            # The value step alone (its gradient is the same as inside the joint loss), then
            # the actor's advantage against the new V, as the IQL authors and d3rlpy order it.
            value_grads = jax.grad(
                lambda p: expectile_value_loss(target_q, apply(self.value, observations, params=p), self.config.expectile)[0]
            )(self.value.params)
            value = self.value.apply_gradients(grads=value_grads)
            actor_value = apply(value, observations)
        grads, info = jax.grad(self.total_loss, has_aux=True)(params, batch, target_q, actor_value, dropout_key)
        if actor_value is None:
            value = self.value.apply_gradients(grads=grads["value"])
        critic = self.critic.apply_gradients(grads=grads["critic"])
        actor = self.actor.apply_gradients(grads=grads["actor"])
        target = polyak_update(critic.params, self.target_critic_params, self.config.tau)
        return self.replace(value=value, critic=critic, actor=actor, target_critic_params=target, rng=rng), info

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        extraction = self.config.extraction
        if extraction == "ddpg":
            raw = self.actor.apply_fn({"params": self.actor.params}, observations)
            return jnp.tanh(raw) if self.config.eval_squash == "tanh" else jnp.clip(raw, -1.0, 1.0)
        dist = self.actor.apply_fn({"params": self.actor.params}, observations)
        if extraction == "awr":
            actions = dist.mode() if deterministic else dist.sample(seed=key)
            return jnp.clip(actions, -1.0, 1.0)
        tokens = dist.mode() if deterministic else dist.sample(seed=key)
        return self.tokenizer.decode(tokens)

    def q_values(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """min over the twin heads of Q(s, a), for diagnostics (Q on data vs policy actions)."""
        return self.critic.apply_fn({"params": self.critic.params}, observations, actions).min(axis=0)
