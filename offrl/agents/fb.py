"""Forward-backward (FB) representations (Touati & Ollivier, 2021), reward-free.

F(s, a, z)^T B(s') rho(ds') models the successor measure of the policy pi_z, counted from
the next state: M^{pi_z}(s, a, ds') = sum_{t >= 0} gamma^t P(s_{t+1} in ds' | s, a, pi_z),
and pi_z is greedy for Q_z(s, a) = F(s, a, z)^T z. Any reward r then has the zero-shot
task vector z_r = E_rho[r(s) B(s)], the goal g has z = B(g), and pi_{z_r} is
(approximately) optimal for r.

The losses follow facebookresearch/controllable_agent (`fb_ddpg.py`, `discrete_fb.py`):

* Measure loss, per F head k, on a batch of N transitions with B taken at next states:
      0.5 * mean_{i != j} (F_k(s_i, a_i, z_i)^T B(s'_j) - gamma_i * target_M_ij)^2
      - mean_i F_k(s_i, a_i, z_i)^T B(s'_i)
  summed over the two heads, with gamma_i = gamma * (1 - terminal_i) and
  target_M_ij = min_k target_F_k(s'_i, a'_i, z_i)^T target_B(s'_j). The min over target
  heads (as in controllable_agent) counters the overestimation the greedy/actor next
  action a'_i introduces, as in TD3. Discrete variant options: `target_action="online"`
  picks a'_i greedily with the online F instead of the target F (double DQN), and
  `target_heads="mean"` averages the target heads instead of taking the min. With both,
  the bias the greedy max adds and the one the min takes away both leave the target; on
  the two-room grid the relative error of F^T B rho against the exact successor measure
  did not drop beyond run-to-run noise (README).
* Orthonormality of B, with C = B B^T over the batch (N x N), coefficient `ortho_coef`:
      mean_{i != j} C_ij^2 - 2 * mean_i C_ii
  B is normalised to norm sqrt(d), so the diagonal part is the constant -2d and is logged
  only for comparability with controllable_agent; the off-diagonal part does the work.
* z: uniform on the sphere of radius sqrt(d); a `mix_ratio` fraction of the batch instead
  gets the normalised B of the batch's next states, shuffled (the B(s') pass the loss makes
  anyway), so F is trained on the z's that
  goal and reward inference will produce. `mix_ratio=1` trains on goal z's alone: F's
  precision then goes to the tasks goal reaching asks about, which is what brings
  F^T B rho within 10% of the exact successor measure on the two-room grid (README),
  at the cost of the rewards whose z is not the B of a single state.
* Continuous actions: a DDPG actor tanh(mu(s, z)) maximising min_k F_k(s, a, z)^T z, with
  clipped Gaussian noise on the actions fed to F (as their TruncatedNormal actor).
  Discrete actions (`discrete_actions`: number of actions): F(s, z) gives a d-vector per
  action and the policy is argmax_a min_k F_k(s, a, z)^T z; no actor.
* F's network, `forward_arch`: "concat" is controllable_agent's (MLP embeddings of (s, a)
  and of (s, z), concatenated, then an MLP per head). "bilinear" makes each head linear in
  z for every (s, a): F_k(s, a, z) = U_k (phi_k(s, a) * V_k z) + c_k, so the goal value
  Q(s, a, B(g)) is bilinear in features of (s, a) and of the goal, as in bilinear
  goal-conditioned value networks. On the four-rooms grid it is what brings zero-shot goal
  reaching above 95% of (start, goal) pairs, with gamma 0.95 (0.98-0.99 at 2.5k-10k
  updates, where "concat" stays at 75-80% at any budget tried; README). At gamma 0.98 it
  peaks near 97% and falls back: the action gap a greedy step needs shrinks with
  1 - gamma. Being linear in z, it cannot produce the measure's z-independent part (the
  next state itself, whatever the task) for z's spread over the sphere, but it can on goal
  z's when d is at least the number of states (the B(g) are then linearly independent):
  with `mix_ratio=1` it reproduces the two-room successor measure more closely than
  "concat" (slow test). With half the z's on the sphere, neither F is close to the
  measure on four-rooms (relative errors about 0.9 bilinear, 1.0 concat).

Not included: controllable_agent's auxiliary Q loss (`q_loss`) and hindsight future
goals; their networks are 1024 wide, the default here is 256 so it trains on a CPU.

Which observation dims each network sees (tuples of indices; None: the whole observation):

* `policy_dims`: F and the actor see `observations[..., policy_dims]`. For goal-conditioned
  datasets (pointmaze-v1) this keeps the goal fields out of the reward-free representation.
* `goal_dims`: B sees `observations[..., goal_dims]` (e.g. the position coordinates).
* `eval_goal_dims`: where the goal sits in an *evaluation* observation (pointmaze-v1:
  the last two dims, goal x, y). When set, `sample_actions` called without a z reads the goal there and
  acts with z = B(goal) for each row (zero-shot goal reaching in the shared evaluation);
  when None, `eval_task` decides (below). `with_task(z)` stores z and sets it to None, so a
  task given explicitly overrides the episodes' goals. It must have as many dims as
  `goal_dims`, and the values must be in the same coordinates as the `goal_dims` ones
  (so observation normalisation, which rescales dims separately, should stay off).

The task `sample_actions` acts on without a z and without `eval_goal_dims` (`eval_task`):

* "rewards" (default): the dataset's own reward, z_r = E_rho[r B(s')] on the sphere. The
  agent keeps `reward_z`, an exponential moving average (decay `reward_z_decay`) of the
  batch means of r_i B(s'_i), B being the online B of the update; `reward_task_z()`
  projects it. This is `infer_z_from_rewards` on the next observations, uncentred (what
  `scripts/evaluate.py --reward dataset` computes), estimated along training, so the
  training loop's evaluation of a reward-labelled dataset (D4RL maze2d, Minari) scores
  the zero-shot policy for the dataset's task instead of an arbitrary z. Reward-free data
  (all rewards 0) leaves it at 0.
* "stored": the stored `z`, zeros unless set with `with_task`.

`with_task(z)` switches to "stored". The rewards never reach the losses: F, B and the
actor are trained reward-free whatever the dataset holds; they only feed `reward_z`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import flax
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from offrl.config import config_class, option, run_steps
from offrl.networks import adam_optimizer, default_init, polyak_update
from offrl.transitions import normalize_observations

if TYPE_CHECKING:
    from offrl.envs.pointmaze import MazeGeometry


@config_class
class FBConfig:
    """The hyperparameters (the losses they enter: the module docstring)."""

    z_dim: int = option(50, "dimension d of the task vectors z and of B's output", ge=1)
    batch_size: int = option(1024, "dataset transitions per update", ge=1)
    learning_rate: float = option(1e-4, "Adam step size of F, B and the actor", gt=0, batchable=True)
    lr_schedule: str = option(
        "constant", "cosine: the learning rate decays to 0 over max_steps, so late updates stop moving F",
        choices=("constant", "cosine"),
    )
    max_steps: int = option(1_000_000, "set by the training loop to the run's number of updates (--steps)", ge=1, derive=run_steps)
    tau: float = option(0.01, "Polyak rate of the target F and B", ge=0, le=1, batchable=True)
    gamma: float = option(0.98, "discount of the successor measure", ge=0, le=1, batchable=True)
    hidden_dim: int = option(256, "width of F's and the actor's MLPs; the paper uses 1024; 256 keeps CPU runs practical", ge=1)
    feature_dim: int = option(256, "width of F's and the actor's (s, a) and (s, z) embeddings", ge=1)
    backward_hidden_dim: int = option(256, "width of B's MLP", ge=1)
    ortho_coef: float = option(1.0, "weight of B's orthonormality loss", ge=0, batchable=True)
    mix_ratio: float = option(
        0.5, "fraction of the batch whose z is the normalised B of dataset states (goal z's)", ge=0, le=1, batchable=True
    )
    actor_noise: float = option(
        0.2, "std of the Gaussian noise on the actor's actions fed to F and in sampled actions (continuous)", ge=0, batchable=True
    )
    actor_noise_clip: float = option(0.3, "that noise is clipped to +- this", ge=0, batchable=True)
    discrete_actions: int | None = option(None, "number of actions for the discrete (greedy) variant; null: continuous", ge=1)
    goal_dims: tuple[int, ...] | None = option(None, "indices of the observation B sees; null: all of it", ge=0)
    policy_dims: tuple[int, ...] | None = option(None, "indices of the observation F and the actor see; null: all of it", ge=0)
    eval_goal_dims: tuple[int, ...] | None = option(
        None, "where sample_actions (no z) reads the goal; null: act on eval_task", ge=0
    )
    eval_task: str = option(
        "rewards", "no z, no eval_goal_dims: rewards (dataset reward's z, reward_z) | stored (z)", choices=("rewards", "stored")
    )
    reward_z_decay: float = option(
        0.99, "EMA decay of reward_z over batches: about 1 / (1 - decay) batches averaged", ge=0, lt=1, batchable=True
    )
    exploration_epsilon: float = option(
        0.2, "discrete variant, non-deterministic sample_actions: random action rate", ge=0, le=1
    )
    target_action: str = option(
        "target", "discrete variant: greedy next action from the target | online F", choices=("target", "online")
    )
    target_heads: str = option("min", "of the twin target heads", choices=("min", "mean"))
    forward_arch: str = option(
        "concat", "concat (controllable_agent's F) | bilinear (linear in z per (s, a))", choices=("concat", "bilinear")
    )
    bilinear_rank: int = option(512, "width of the elementwise product in the bilinear F", ge=1)
    actor_arch: str = option(
        "embeddings",
        "embeddings (controllable_agent's: s and (s, z) embeddings, then an MLP) | mlp (one MLP of (s, z), a third of the cost)",
        choices=("embeddings", "mlp"),
    )


Batch = dict[str, jax.Array]


def project_to_sphere(x: jax.Array, radius: float) -> jax.Array:
    """Rescale the last axis to norm `radius` (the FB normalisation of B and z)."""
    return radius * x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _embedding(hidden_dim: int, feature_dim: int) -> nn.Module:
    # Dense -> LayerNorm -> tanh -> Dense -> relu, controllable_agent's "ntanh" preprocessor.
    return nn.Sequential(
        [
            nn.Dense(hidden_dim, kernel_init=default_init()),
            nn.LayerNorm(),
            jnp.tanh,
            nn.Dense(feature_dim, kernel_init=default_init()),
            nn.relu,
        ]
    )


class ForwardNetwork(nn.Module):
    """Twin F heads on shared (s, a) and (s, z) embeddings: [2, ..., d], or [2, ..., A, d]
    when `num_actions` is set (then no action input)."""

    z_dim: int
    hidden_dim: int
    feature_dim: int
    num_actions: int | None = None

    @nn.compact
    def __call__(self, observations: jax.Array, z: jax.Array, actions: jax.Array | None = None) -> jax.Array:
        first = observations if actions is None else jnp.concatenate([observations, actions], axis=-1)
        features = jnp.concatenate(
            [
                _embedding(self.hidden_dim, self.feature_dim)(first),
                _embedding(self.hidden_dim, self.feature_dim)(jnp.concatenate([observations, z], axis=-1)),
            ],
            axis=-1,
        )
        out_dim = self.z_dim * (self.num_actions or 1)
        heads = [
            nn.Sequential([nn.Dense(self.hidden_dim, kernel_init=default_init()), nn.relu, nn.Dense(out_dim, kernel_init=default_init())])(
                features
            )
            for _ in range(2)
        ]
        out = jnp.stack(heads)
        if self.num_actions is not None:
            out = out.reshape(*out.shape[:-1], self.num_actions, self.z_dim)
        return out


class BilinearForwardNetwork(nn.Module):
    """Twin F heads linear in z for each (s, a): F_k(s, a, z) = U_k (phi_k(s, a) * V_k z) + c_k,
    the product elementwise over `rank` features. Same output shapes as `ForwardNetwork`.

    Q(s, a, B(g)) is then bilinear in features of (s, a) and of the goal, as in bilinear
    goal-conditioned value networks; see the module docstring for what it buys and costs."""

    z_dim: int
    hidden_dim: int
    feature_dim: int
    num_actions: int | None = None
    rank: int = 512

    @nn.compact
    def __call__(self, observations: jax.Array, z: jax.Array, actions: jax.Array | None = None) -> jax.Array:
        first = observations if actions is None else jnp.concatenate([observations, actions], axis=-1)
        num_actions = self.num_actions or 1
        heads = []
        for _ in range(2):
            phi = nn.Dense(num_actions * self.rank, kernel_init=default_init())(_embedding(self.hidden_dim, self.feature_dim)(first))
            phi = phi.reshape(*phi.shape[:-1], num_actions, self.rank)
            psi = nn.Dense(self.rank, use_bias=False, kernel_init=default_init())(z)
            heads.append(nn.Dense(self.z_dim, kernel_init=default_init())(phi * psi[..., None, :]))
        out = jnp.stack(heads)
        return out if self.num_actions is not None else out[..., 0, :]


class BackwardNetwork(nn.Module):
    """B(s') projected to the sphere of radius sqrt(d)."""

    z_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, goals: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden_dim, kernel_init=default_init())(goals)
        x = jnp.tanh(nn.LayerNorm()(x))
        x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=default_init())(x))
        x = nn.Dense(self.z_dim, kernel_init=default_init())(x)
        return project_to_sphere(x, math.sqrt(self.z_dim))


class Actor(nn.Module):
    """mu(s, z) before tanh, on separate s and (s, z) embeddings."""

    action_dim: int
    hidden_dim: int
    feature_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        features = jnp.concatenate(
            [
                _embedding(self.hidden_dim, self.feature_dim)(observations),
                _embedding(self.hidden_dim, self.feature_dim)(jnp.concatenate([observations, z], axis=-1)),
            ],
            axis=-1,
        )
        x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=default_init())(features))
        return nn.Dense(self.action_dim, kernel_init=default_init())(x)


class MLPActor(nn.Module):
    """mu(s, z) before tanh, one MLP of (s, z) with two hidden layers, as IQL's actors: about
    a third of `Actor`'s multiply-adds per row at equal width."""

    action_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        x = jnp.concatenate([observations, z], axis=-1)
        for _ in range(2):
            x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=default_init())(x))
        return nn.Dense(self.action_dim, kernel_init=default_init())(x)


def _select(observations: jax.Array, dims: tuple[int, ...] | None) -> jax.Array:
    return observations if dims is None else observations[..., jnp.asarray(dims)]


def goal_inputs(observations: jax.Array, config: Any) -> jax.Array:
    """The part of the observation B sees (`goal_dims`)."""
    return _select(observations, config.goal_dims)


def policy_inputs(observations: jax.Array, config: Any) -> jax.Array:
    """The part of the observation F and the actor see (`policy_dims`)."""
    return _select(observations, config.policy_dims)


def sample_z(key: jax.Array, batch_size: int, z_dim: int) -> jax.Array:
    """Uniform on the sphere of radius sqrt(d)."""
    return project_to_sphere(jax.random.normal(key, (batch_size, z_dim)), math.sqrt(z_dim))


def measure_loss(
    F: jax.Array, B: jax.Array, target_M: jax.Array, discounts: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """FB measure loss summed over heads.

    F: [heads, N, d] at (s_i, a_i, z_i); B: [N, d] at s'_j; target_M: [N, N] (no
    gradient); discounts: [N], gamma * (1 - terminal_i).
    """
    n = B.shape[0]
    off_diagonal = 1.0 - jnp.eye(n)
    M = jnp.einsum("kid,jd->kij", F, B)
    residual = M - discounts[:, None] * target_M
    offdiag = 0.5 * jnp.sum(jnp.sum(residual**2 * off_diagonal, axis=(1, 2)) / (n * (n - 1)))
    diag = -jnp.sum(jnp.mean(jnp.diagonal(M, axis1=1, axis2=2), axis=-1))
    return offdiag + diag, {"critic/fb_offdiag": offdiag, "critic/fb_diag": diag, "critic/M_diag": jnp.mean(jnp.diagonal(M, axis1=1, axis2=2))}


def orthonormality_loss(B: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean_{i != j} (B_i^T B_j)^2 - 2 mean_i B_i^T B_i, pushing E[B B^T] towards I.

    The sum over all pairs is the squared Frobenius norm of the d x d Gram matrix B^T B
    (sum_ij (B_i^T B_j)^2 = ||B^T B||^2), so it costs N d^2 instead of the N^2 d of the
    N x N matrix B B^T; the i = j terms, |B_i|^4, are taken off."""
    n = B.shape[0]
    squared_norms = jnp.sum(B**2, axis=-1)
    offdiag = (jnp.sum((B.T @ B) ** 2) - jnp.sum(squared_norms**2)) / (n * (n - 1))
    diag = -2.0 * jnp.mean(squared_norms)
    return offdiag + diag, {"critic/orth_offdiag": offdiag, "critic/orth_diag": diag}


def forward_at_actions(F: jax.Array, actions: jax.Array) -> jax.Array:
    """The row of each action: F [heads, N, A, d], actions int [N] -> [heads, N, d]."""
    return jnp.take_along_axis(F, actions[None, :, None, None], axis=2)[:, :, 0]


def greedy_actions(F: jax.Array, z: jax.Array) -> jax.Array:
    """argmax_a min_k F_k(s, a, z)^T z for F: [heads, ..., A, d], z: [..., d]."""
    q = jnp.min(jnp.einsum("k...ad,...d->k...a", F, z), axis=0)
    return jnp.argmax(q, axis=-1)


class FBAgent(flax.struct.PyTreeNode):
    """F, B (with Polyak targets) and, for continuous actions, the actor; the task
    `sample_actions` uses when called without one is `reward_task_z()` or the stored `z`
    (`eval_task`, module docstring)."""

    rng: jax.Array
    forward: TrainState
    backward: TrainState
    target_forward_params: Any
    target_backward_params: Any
    actor: TrainState | None
    z: jax.Array  # zeros until with_task
    reward_z: jax.Array  # EMA of batch means of r B(s'), unnormalised: the dataset-reward task
    config: FBConfig  # batchable fields are leaves: arrays under --vmap
    config_class = FBConfig

    @classmethod
    def create(cls, config: FBConfig, example_batch: Batch, key: jax.Array) -> FBAgent:
        if config.target_action == "online" and not config.discrete_actions:
            raise ValueError("target_action='online' is for the discrete variant; continuous next actions come from the actor")
        if config.eval_goal_dims is not None:
            goal_width = len(config.goal_dims) if config.goal_dims is not None else example_batch["observations"].shape[-1]
            if len(config.eval_goal_dims) != goal_width:
                raise ValueError(
                    f"eval_goal_dims {config.eval_goal_dims} must have as many dims as B's input ({goal_width}: goal_dims {config.goal_dims})"
                )
        d = config.z_dim
        discrete = config.discrete_actions
        observations = jnp.asarray(example_batch["observations"][:1])
        z = jnp.zeros((1, d))
        forward_key, backward_key, actor_key, rng = jax.random.split(key, 4)

        if config.forward_arch == "bilinear":
            forward_def = BilinearForwardNetwork(d, config.hidden_dim, config.feature_dim, discrete, config.bilinear_rank)
        else:
            forward_def = ForwardNetwork(d, config.hidden_dim, config.feature_dim, discrete)
        policy_observations = policy_inputs(observations, config)
        forward_inputs = (policy_observations, z) if discrete else (policy_observations, z, jnp.asarray(example_batch["actions"][:1]))
        forward_params = forward_def.init(forward_key, *forward_inputs)["params"]
        backward_def = BackwardNetwork(d, config.backward_hidden_dim)
        backward_params = backward_def.init(backward_key, goal_inputs(observations, config))["params"]

        def make_state(module: nn.Module, params: Any) -> TrainState:
            tx = adam_optimizer(config.learning_rate, config.lr_schedule, config.max_steps)
            return TrainState.create(apply_fn=module.apply, params=params, tx=tx)

        actor = None
        if not discrete:
            action_dim = example_batch["actions"].shape[-1]
            if config.actor_arch == "mlp":
                actor_def = MLPActor(action_dim, config.hidden_dim)
            else:
                actor_def = Actor(action_dim, config.hidden_dim, config.feature_dim)
            actor = make_state(actor_def, actor_def.init(actor_key, policy_observations, z)["params"])
        return cls(
            rng=rng,
            forward=make_state(forward_def, forward_params),
            backward=make_state(backward_def, backward_params),
            target_forward_params=forward_params,
            target_backward_params=backward_params,
            actor=actor,
            z=jnp.zeros((d,)),
            reward_z=jnp.zeros((d,)),
            config=config,
        )

    # ---- evaluation of the networks -------------------------------------------------

    def forward_values(self, observations: jax.Array, z: jax.Array, actions: jax.Array | None = None, params: Any = None) -> jax.Array:
        """F: [2, N, d] at the given actions (continuous), [2, N, A, d] for discrete
        (of full observations: the `policy_dims` slice is taken here)."""
        params = self.forward.params if params is None else params
        observations = policy_inputs(observations, self.config)
        if self.config.discrete_actions:
            return self.forward.apply_fn({"params": params}, observations, z)
        return self.forward.apply_fn({"params": params}, observations, z, actions)

    def backward_values(self, observations: jax.Array, params: Any = None) -> jax.Array:
        """B of full observations (the goal slice is taken here)."""
        params = self.backward.params if params is None else params
        return self.backward.apply_fn({"params": params}, goal_inputs(observations, self.config))

    def actor_mean(self, observations: jax.Array, z: jax.Array, params: Any = None) -> jax.Array:
        """tanh(mu(s, z)) of full observations (continuous)."""
        params = self.actor.params if params is None else params
        return jnp.tanh(self.actor.apply_fn({"params": params}, policy_inputs(observations, self.config), z))

    def _policy_actions(self, observations: jax.Array, z: jax.Array, key: jax.Array, params: Any = None) -> jax.Array:
        """tanh(mu(s, z)) plus clipped Gaussian noise, clipped to [-1, 1] (continuous)."""
        mean = self.actor_mean(observations, z, params)
        noise = jnp.clip(
            self.config.actor_noise * jax.random.normal(key, mean.shape),
            -self.config.actor_noise_clip,
            self.config.actor_noise_clip,
        )
        return jnp.clip(mean + noise, -1.0, 1.0)

    # ---- training -------------------------------------------------------------------

    def _training_z(self, key: jax.Array, dataset_B: jax.Array) -> jax.Array:
        """One z per row: uniform on the sphere, or (a `mix_ratio` fraction) a row of
        `dataset_B`, B of dataset states (no gradient), shuffled so that a row's z is not tied to its own s'."""
        sphere_key, perm_key, mix_key = jax.random.split(key, 3)
        n, d = dataset_B.shape
        z = sample_z(sphere_key, n, d)
        from_data = jax.random.permutation(perm_key, jax.lax.stop_gradient(dataset_B))
        use_data = jax.random.uniform(mix_key, (n, 1)) < self.config.mix_ratio
        return jnp.where(use_data, from_data, z)

    def _target_measure(self, batch: Batch, z: jax.Array, key: jax.Array) -> jax.Array:
        """min (or mean) over target heads of target_F(s', a', z)^T target_B(s'_j): [N, N]."""
        next_obs = batch["next_observations"]
        if self.config.discrete_actions:
            target_F = self.forward_values(next_obs, z, params=self.target_forward_params)
            select_F = self.forward_values(next_obs, z) if self.config.target_action == "online" else target_F
            next_actions = greedy_actions(select_F, z)
            target_F = forward_at_actions(target_F, next_actions)
        else:
            next_actions = self._policy_actions(next_obs, z, key)
            target_F = self.forward_values(next_obs, z, next_actions, params=self.target_forward_params)
        target_B = self.backward_values(next_obs, params=self.target_backward_params)
        reduce_heads = jnp.mean if self.config.target_heads == "mean" else jnp.min
        return reduce_heads(jnp.einsum("kid,jd->kij", target_F, target_B), axis=0)

    def fb_loss(
        self, forward_params: Any, B: jax.Array, batch: Batch, z: jax.Array, target_M: jax.Array
    ) -> tuple[jax.Array, dict]:
        """The loss and logged metrics, given B(s') of the batch (its gradient flows back to B's
        parameters in `update`)."""
        F = self.forward_values(batch["observations"], z, batch["actions"], params=forward_params)
        if self.config.discrete_actions:
            actions = batch["actions"][:, 0].astype(jnp.int32)
            F = forward_at_actions(F, actions)
        discounts = self.config.gamma * (1.0 - batch["terminals"])
        fb, fb_info = measure_loss(F, B, target_M, discounts)
        orth, orth_info = orthonormality_loss(B)
        loss = fb + self.config.ortho_coef * orth
        return loss, {"critic/fb_loss": fb, "critic/orth_loss": orth, **fb_info, **orth_info}

    def actor_loss(self, actor_params: Any, observations: jax.Array, z: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        actions = self._policy_actions(observations, z, key, params=actor_params)
        q = jnp.min(jnp.einsum("kid,id->ki", self.forward_values(observations, z, actions), z), axis=0)
        return -jnp.mean(q), {"actor/loss": -jnp.mean(q), "actor/q": jnp.mean(q)}

    def update(self, batch: Batch) -> tuple[FBAgent, dict]:
        rng, z_key, target_key, actor_key = jax.random.split(self.rng, 4)
        # One pass of the online B over the batch's next states serves the loss (through its
        # vjp) and the goal z's, which take B of these states, shuffled: B of a second sample of
        # dataset states would cost another pass for the same distribution.
        B, backward_vjp = jax.vjp(lambda params: self.backward_values(batch["next_observations"], params=params), self.backward.params)
        z = self._training_z(z_key, B)
        target_M = jax.lax.stop_gradient(self._target_measure(batch, z, target_key))
        (forward_grads, B_grads), info = jax.grad(self.fb_loss, argnums=(0, 1), has_aux=True)(
            self.forward.params, B, batch, z, target_M
        )
        (backward_grads,) = backward_vjp(B_grads)
        # Rewards are received at s' (r(s, a, s')) and B is trained on s', as in
        # infer_z_from_rewards on next observations; no centring, as its default.
        batch_reward_z = jnp.mean(batch["rewards"].reshape(-1, 1) * jax.lax.stop_gradient(B), axis=0)
        decay = self.config.reward_z_decay
        agent = self.replace(
            reward_z=decay * self.reward_z + (1.0 - decay) * batch_reward_z,
            rng=rng,
            forward=self.forward.apply_gradients(grads=forward_grads),
            backward=self.backward.apply_gradients(grads=backward_grads),
        )
        if agent.actor is not None:
            # The actor climbs the freshly updated F, as controllable_agent orders the steps.
            actor_grads, actor_info = jax.grad(agent.actor_loss, has_aux=True)(agent.actor.params, batch["observations"], z, actor_key)
            agent = agent.replace(actor=agent.actor.apply_gradients(grads=actor_grads))
            info.update(actor_info)
        tau = self.config.tau
        agent = agent.replace(
            target_forward_params=polyak_update(agent.forward.params, agent.target_forward_params, tau),
            target_backward_params=polyak_update(agent.backward.params, agent.target_backward_params, tau),
        )
        return agent, info

    # ---- acting ---------------------------------------------------------------------

    def with_task(self, z: jax.Array) -> FBAgent:
        """Fix the task for `sample_actions` calls that pass no z (shared evaluation).

        Per-row goal inference (`eval_goal_dims`) and the dataset-reward task are switched
        off: otherwise the agent would silently keep acting on each episode's observed goal
        or on the dataset's reward instead of z."""
        return self.replace(
            z=jnp.asarray(z, jnp.float32).reshape(self.z.shape),
            config=self.config.replace(eval_goal_dims=None, eval_task="stored"),
        )

    def reward_task_z(self) -> jax.Array:
        """The dataset-reward task's z: `reward_z` on the sphere (zeros before any update)."""
        return project_to_sphere(self.reward_z, math.sqrt(self.config.z_dim))

    def q_values(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        """min_k F_k(s, a, z)^T z for every action: [..., A] (discrete variant only)."""
        z = jnp.broadcast_to(z, (*observations.shape[:-1], z.shape[-1]))
        return jnp.min(jnp.einsum("k...ad,...d->k...a", self.forward_values(observations, z), z), axis=0)

    def state_values(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        """V_z(s) = min_k F_k(s, pi_z(s), z)^T z with the deterministic policy: [...]."""
        z = jnp.asarray(z, jnp.float32)
        z = jnp.broadcast_to(z, (*observations.shape[:-1], z.shape[-1]))
        if self.config.discrete_actions:
            return jnp.max(self.q_values(observations, z), axis=-1)
        F = self.forward_values(observations, z, self.actor_mean(observations, z))
        return jnp.min(jnp.einsum("k...d,...d->k...", F, z), axis=0)

    def eval_goal_z(self, observations: jax.Array) -> jax.Array:
        """z = B(goal) per row, the goal read from `observations[..., eval_goal_dims]`."""
        goals = _select(observations, self.config.eval_goal_dims)
        z = self.backward.apply_fn({"params": self.backward.params}, goals)
        return project_to_sphere(z, math.sqrt(self.config.z_dim))

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False, z: jax.Array | None = None) -> jax.Array:
        """pi_z(s). Discrete: int32 indices, epsilon-greedy unless deterministic.
        Continuous: tanh(mu(s, z)), plus the training noise unless deterministic.

        Without z: z = B(goal) of each row's own goal when `eval_goal_dims` is set, else
        the dataset-reward task (`eval_task` "rewards") or the stored `z` ("stored")."""
        if z is None and self.config.eval_goal_dims is not None:
            z = self.eval_goal_z(observations)
        if z is None:
            z = self.reward_task_z() if self.config.eval_task == "rewards" else self.z
        z = jnp.asarray(z, jnp.float32)
        z = jnp.broadcast_to(z, (*observations.shape[:-1], z.shape[-1]))
        if self.config.discrete_actions:
            greedy = jnp.argmax(self.q_values(observations, z), axis=-1).astype(jnp.int32)
            if deterministic:
                return greedy
            explore_key, action_key = jax.random.split(key)
            explore = jax.random.uniform(explore_key, greedy.shape) < self.config.exploration_epsilon
            random = jax.random.randint(action_key, greedy.shape, 0, self.config.discrete_actions)
            return jnp.where(explore, random, greedy)
        if deterministic:
            return self.actor_mean(observations, z)
        return self._policy_actions(observations, z, key)


# ---- zero-shot task inference -------------------------------------------------------
#
# Observations given here are the agent's inputs; with `obs_mean` and `obs_std` they are
# raw (environment coordinates) and are normalized as in training first.


def _agent_inputs(observations: Any, obs_mean: Any | None, obs_std: Any | None) -> jax.Array:
    observations = jnp.asarray(observations, jnp.float32)
    if obs_mean is None:
        return observations
    return normalize_observations(observations, jnp.asarray(obs_mean), jnp.asarray(obs_std))


def goal_observation(agent: FBAgent, goal: Sequence[float], obs_dim: int) -> np.ndarray:
    """A raw observation holding `goal` in the dims B reads (`goal_dims`; all of them when
    None) and zeros elsewhere, which B never sees: `goal` is in B's input coordinates
    (pointmaze: the ball's x, y)."""
    dims = agent.config.goal_dims or tuple(range(obs_dim))
    if len(goal) != len(dims):
        raise ValueError(f"the goal has {len(goal)} values but B reads {len(dims)} observation dims (goal_dims {list(dims)})")
    observation = np.zeros(obs_dim, np.float32)
    observation[list(dims)] = goal
    return observation


def infer_z_from_goal(
    agent: FBAgent, goal_observation: Any, obs_mean: Any | None = None, obs_std: Any | None = None
) -> jax.Array:
    """z = B(g) on the sphere: pi_z then maximises the discounted occupancy of g."""
    goal = _agent_inputs(goal_observation, obs_mean, obs_std)
    return project_to_sphere(agent.backward_values(goal), math.sqrt(agent.config.z_dim))


def goal_policies(agent: FBAgent, goal_observations: jax.Array, observations: jax.Array) -> jax.Array:
    """The deterministic action of pi_z, z = B(goal), at every row of `observations`, for
    every goal: [goals, rows, ...] (agent inputs, as in training)."""
    zs = infer_z_from_goal(agent, goal_observations)
    return jax.vmap(lambda z: agent.sample_actions(observations, None, True, z=z))(zs)


def _sample_rows(num_rows: int, max_samples: int, key: jax.Array | None) -> np.ndarray | None:
    """Indices of `max_samples` distinct random rows (key default PRNGKey(0)), None when all fit."""
    if num_rows <= max_samples:
        return None
    key = jax.random.PRNGKey(0) if key is None else key
    return np.asarray(jax.random.choice(key, num_rows, (max_samples,), replace=False))


def infer_z_from_rewards(
    agent: FBAgent,
    observations: Any,
    rewards: Any,
    max_samples: int = 10_000,
    key: jax.Array | None = None,
    obs_mean: Any | None = None,
    obs_std: Any | None = None,
    center: bool = False,
) -> jax.Array:
    """z = E[r(s) B(s)] over a sample of states, on the sphere.

    `observations` should be the states the rewards are received in (for dataset rewards
    r(s, a, s'), the next observations), drawn from the data distribution rho, since the
    expectation is under rho; at most `max_samples` random rows are used.

    `center` subtracts the sample's mean reward first. A constant c added to r leaves the
    task unchanged but adds c E[B] to z, and the orthonormality loss does not make E[B]
    zero, so a reward far from zero on average (e.g. a negative distance) can point z
    mostly along E[B] instead of the task; centring removes that direction.
    """
    rows = _sample_rows(len(observations), max_samples, key)
    if rows is not None:
        observations, rewards = observations[rows], rewards[rows]
    observations = _agent_inputs(observations, obs_mean, obs_std)
    rewards = jnp.asarray(rewards, jnp.float32).reshape(-1)
    if center:
        rewards = rewards - rewards.mean()
    z = jnp.mean(rewards[:, None] * agent.backward_values(observations), axis=0)
    return project_to_sphere(z, math.sqrt(agent.config.z_dim))


def infer_z_from_reward_fn(
    agent: FBAgent,
    observations: Any,
    reward_fn: Callable[[Any], Any],
    max_samples: int = 10_000,
    key: jax.Array | None = None,
    obs_mean: Any | None = None,
    obs_std: Any | None = None,
    center: bool = False,
) -> jax.Array:
    """`infer_z_from_rewards` with r = reward_fn(observations), the same rows sampled.

    reward_fn maps a batch of rows [N, obs_dim] to rewards [N]; it is called once, on the
    sampled rows only, as given (raw when `obs_mean`/`obs_std` are given, so it reads
    environment coordinates) and in the array type given (numpy stays numpy, so plain
    numpy reward code works)."""
    rows = _sample_rows(len(observations), max_samples, key)
    if rows is not None:
        observations = observations[rows]
    rewards = reward_fn(observations)
    return infer_z_from_rewards(agent, observations, rewards, len(observations), obs_mean=obs_mean, obs_std=obs_std,
                                center=center)


def value_landscape(
    agent: FBAgent,
    z: jax.Array,
    base_observation: np.ndarray,
    free_cells: np.ndarray,
    position_dims: Sequence[tuple[int, int]],
    cell_size: float = 1.0,
    points_per_cell: int = 10,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """V_z(s) = min_k F_k(s, pi_z(s), z)^T z on a grid of positions over a maze.

    `free_cells` is [rows, cols], True where there is no wall, row 0 at the top (as maze
    maps are written); the maze is centred on the origin with square cells of side
    `cell_size` (gymnasium-robotics' layout). Grid points are the centres of
    `points_per_cell` x `points_per_cell` squares per cell; each is `base_observation`
    (raw, un-normalized) with its x, y written into every (x, y) pair of `position_dims`,
    then normalized with `obs_mean`, `obs_std` if given, as in training.

    Returns the values, [rows * points_per_cell, cols * points_per_cell] with row 0 at the
    top and NaN on walls, and their extent (left, right, bottom, top) for `imshow`.
    """
    free = np.asarray(free_cells, bool)
    rows, cols = free.shape
    half_width, half_height = cols * cell_size / 2, rows * cell_size / 2
    spacing = cell_size / points_per_cell
    xs = -half_width + (np.arange(cols * points_per_cell) + 0.5) * spacing
    ys = half_height - (np.arange(rows * points_per_cell) + 0.5) * spacing
    grid_x, grid_y = np.meshgrid(xs, ys)
    observations = np.tile(np.asarray(base_observation, np.float32), (grid_x.size, 1))
    for x_dim, y_dim in position_dims:
        observations[:, x_dim] = grid_x.ravel()
        observations[:, y_dim] = grid_y.ravel()
    observations = _agent_inputs(observations, obs_mean, obs_std)
    values = np.asarray(agent.state_values(observations, jnp.asarray(z, jnp.float32)), np.float64)
    values = values.reshape(grid_x.shape)
    values[~np.repeat(np.repeat(free, points_per_cell, axis=0), points_per_cell, axis=1)] = np.nan
    return values, (-half_width, half_width, -half_height, half_height)


def pointmaze_value_map(
    agent: FBAgent,
    maze: MazeGeometry,
    z: jax.Array | None = None,
    goal: Sequence[float] | None = None,
    obs_mean: Any | None = None,
    obs_std: Any | None = None,
) -> tuple[np.ndarray, tuple[float, float, float, float], jax.Array, np.ndarray | None]:
    """`value_landscape` over a PointMaze (`offrl.envs.pointmaze.maze_geometry`), each grid
    point the maze's base observation moved there at rest: (values, extent, z, goal x, y).

    Without z, z = B(centre of the maze's goal cell) and that centre is the goal returned.
    With z, `goal` (in B's input coordinates, e.g. what z was inferred from) is returned
    when B reads the ball's position, so a figure can mark it; otherwise None.
    """
    goal_xy = None
    if z is None:
        if maze.goal_xy is None:
            raise ValueError("the maze has no single goal cell to infer z from; give z")
        goal_xy = maze.goal_xy
        z = infer_z_from_goal(agent, maze.observation_at(goal_xy), obs_mean, obs_std)
    elif goal is not None and tuple(agent.config.goal_dims or ()) in maze.position_dims:
        goal_xy = np.asarray(goal)
    values, extent = value_landscape(
        agent, z, maze.base_observation, maze.free_cells, maze.position_dims, maze.cell_size, obs_mean=obs_mean, obs_std=obs_std
    )
    return values, extent, z, goal_xy
