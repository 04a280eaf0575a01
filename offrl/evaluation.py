"""Evaluation: a batch of episodes in a gymnasium vector env, one batched policy call per step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


def make_policy(agent: Any, obs_mean: jax.Array, obs_std: jax.Array, deterministic: bool) -> PolicyFn:
    """The agent's action sampler on raw environment observations (normalized as in training)."""

    def policy(observations: jax.Array, key: jax.Array) -> jax.Array:
        return agent.sample_actions((observations - obs_mean) / obs_std, key, deterministic=deterministic)

    return jax.jit(policy)


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jax.random.split` for one key ([2]) or a stack of keys ([n, 2]), each split on its own."""
    if key.ndim == 1:
        new_key, step_key = jax.random.split(key)
        return new_key, step_key
    pairs = jax.vmap(jax.random.split)(key)
    return pairs[:, 0], pairs[:, 1]


def run_episodes(
    envs: gym.vector.VectorEnv, policy: PolicyFn, key: jax.Array, seed: int | list[int]
) -> dict[str, np.ndarray]:
    """Exactly one episode per sub-environment.

    Sub-environments that finish early keep stepping (the vector env resets them), but
    nothing after their first episode is counted. Success is whether the env ever
    reported `success`/`is_success` during the episode; `success_steps` is the step count
    at which it first did (-1 if never): the steps to the goal.

    Besides the per-episode results, every counted step is returned as a transition
    (observations, actions, rewards, next_observations, terminals, episode_ends, env_ids),
    in stepping order, so online agents train on exactly the episodes this collects;
    `np.argsort(env_ids, kind="stable")` puts them in episode order.
    """
    num_envs = envs.num_envs
    observations, _ = envs.reset(seed=seed)
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    successes = np.zeros(num_envs, dtype=bool)
    success_steps = np.full(num_envs, -1, dtype=np.int64)
    active = np.ones(num_envs, dtype=bool)
    steps: dict[str, list[np.ndarray]] = {
        name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends", "env_ids")
    }
    while active.any():
        key, step_key = split_key(key)
        actions = np.asarray(policy(jnp.asarray(observations, jnp.float32), step_key))
        steps["observations"].append(np.asarray(observations)[active])
        steps["actions"].append(actions[active])
        env_actions = actions[:, 0].astype(np.int64) if isinstance(envs.single_action_space, gym.spaces.Discrete) else actions
        observations, rewards, terminations, truncations, infos = envs.step(env_actions)
        terminations, truncations = np.asarray(terminations), np.asarray(truncations)
        returns += np.where(active, rewards, 0.0)
        lengths += active
        for name in ("success", "is_success"):
            if name in infos:
                first = active & ~successes & np.asarray(infos[name], dtype=bool)
                success_steps[first] = lengths[first]
                successes |= first
        # With NEXT_STEP autoreset the observation returned on a final step is still the
        # episode's last state, not the next episode's first.
        steps["next_observations"].append(np.asarray(observations)[active])
        steps["rewards"].append(np.asarray(rewards, np.float32)[active])
        steps["terminals"].append(terminations[active].astype(np.float32))
        steps["episode_ends"].append((terminations | truncations)[active].astype(np.float32))
        steps["env_ids"].append(np.flatnonzero(active))
        active &= ~(terminations | truncations)
    return {
        "returns": returns,
        "lengths": lengths,
        "successes": successes,
        "success_steps": success_steps,
        **{name: np.concatenate(values) for name, values in steps.items()},
    }


def summarize_episodes(
    episodes: dict[str, np.ndarray], normalize: Callable[[np.ndarray], np.ndarray | None] | None = None
) -> dict[str, float]:
    returns = episodes["returns"]
    metrics = {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(episodes["lengths"].mean()),
        "episodes": int(len(returns)),
        "success_rate": float(episodes["successes"].mean()),
    }
    reached = episodes["success_steps"][episodes["successes"]] if "success_steps" in episodes else np.array([])
    if len(reached):
        metrics["steps_to_goal"] = float(reached.mean())  # over the episodes that reached it
    normalized = normalize(returns) if normalize is not None else None
    if normalized is not None:
        normalized = np.asarray(normalized)
        metrics["normalized_score"] = float(normalized.mean())
        metrics["normalized_score_std"] = float(normalized.std())
    return metrics


def action_scatter(dataset_actions: np.ndarray, policy_actions: np.ndarray, title: str = "") -> Figure:
    """Dataset actions next to policy actions (2-D action spaces): where mean-matching shows."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for axis, actions, label in ((axes[0], dataset_actions, "dataset"), (axes[1], policy_actions, "policy")):
        axis.scatter(actions[:, 0], actions[:, 1], s=2, alpha=0.3)
        axis.set_title(f"{label} actions")
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_aspect("equal")
    if title:
        figure.suptitle(title)
    return figure


def value_landscape_figure(
    values: np.ndarray, extent: tuple[float, float, float, float], goal: np.ndarray | None = None, title: str = ""
) -> Figure:
    """A value landscape over a maze (e.g. `agents.fb.value_landscape`): NaN cells (walls)
    drawn flat grey so they read as walls, not as low values; the goal as a star."""
    import matplotlib
    from matplotlib.figure import Figure

    height, width = values.shape
    figure = Figure(figsize=(6, max(2.0, 5 * height / width)))
    axis = figure.subplots()
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="0.3")
    image = axis.imshow(np.ma.masked_invalid(values), extent=extent, origin="upper", cmap=colormap)
    figure.colorbar(image, ax=axis, label=r"$V(s) = F(s, \pi_z(s), z)^\top z$")
    if goal is not None:
        axis.plot(goal[0], goal[1], marker="*", markersize=18, color="red", markeredgecolor="white", linestyle="none", label="goal")
        axis.legend(loc="upper right")
    axis.set_xlabel("x")
    axis.set_ylabel("y")
    if title:
        axis.set_title(title)
    return figure
