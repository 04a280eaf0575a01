"""A trained policy on raw environment observations, acting as the run's evaluation does.

The evaluation env's observations are flattened (`offrl.envs.flatten_observations`),
normalized with the run's statistics and given to `agent.sample_actions`; the actions go
to `env.step` as they come, Discrete ones as integer indices. That is `policy_actions`, the
one policy function: evaluation and videos call it (`offrl.evaluation`), `Policy` calls it
from a checkpoint alone (`offrl.load_policy`) and `offrl-export` traces it into a
`jax.export` artefact, so none of them can drift apart.

Spaces are described by JSON layouts (`space_layout`), stored with every checkpoint and in
the export spec, so neither the dataset nor gymnasium is needed to know the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from offrl.transitions import normalize_observations

Layout = dict[str, Any]


def space_layout(space: Any) -> Layout:
    """A JSON description of a gymnasium space: type, shape, dtype; finite Box bounds;
    Dict keys in the space's own order (the order observations are flattened in)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_layout(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_layout(sub) for sub in space.spaces]}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "shape": list(space.shape)}
    if isinstance(space, spaces.Box):
        layout: Layout = {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype)}
        if np.isfinite(space.low).all() and np.isfinite(space.high).all():
            layout.update(low=space.low.tolist(), high=space.high.tolist())
        return layout
    raise TypeError(f"cannot describe space {space}; supported: Box, MultiBinary, Discrete, Dict, Tuple")


def flat_size(layout: Layout) -> int:
    if layout["type"] in ("Dict", "Tuple"):
        subs = layout["spaces"].values() if layout["type"] == "Dict" else layout["spaces"]
        return sum(flat_size(sub) for sub in subs)
    if layout["type"] == "Discrete":
        return int(layout["n"])
    return int(np.prod(layout["shape"], dtype=np.int64))


def flatten(layout: Layout, observations: Any) -> jax.Array:
    """`offrl.envs.flatten_observations` in jax.numpy: a batch of observations of the space
    `layout` describes as float32 [batch, flat size] (Dict entries in layout order, leaves
    in C order, Discrete one-hot)."""
    kind = layout["type"]
    if kind == "Dict":
        return jnp.concatenate([flatten(sub, observations[key]) for key, sub in layout["spaces"].items()], axis=-1)
    if kind == "Tuple":
        return jnp.concatenate([flatten(sub, part) for sub, part in zip(layout["spaces"], observations)], axis=-1)
    if kind == "Discrete":
        indices = jnp.asarray(observations).reshape(-1) - layout["start"]
        return jax.nn.one_hot(indices, layout["n"], dtype=jnp.float32)
    array = jnp.asarray(observations)
    return array.reshape(array.shape[0], -1).astype(jnp.float32)


def observation_struct(layout: Layout, batch: Any) -> Any:
    """The input pytree of a batch of observations as `jax.ShapeDtypeStruct`s (batch may be
    symbolic): float32 for Box and MultiBinary leaves, int32 for Discrete."""
    kind = layout["type"]
    if kind == "Dict":
        return {key: observation_struct(sub, batch) for key, sub in layout["spaces"].items()}
    if kind == "Tuple":
        return tuple(observation_struct(sub, batch) for sub in layout["spaces"])
    if kind == "Discrete":
        return jax.ShapeDtypeStruct((batch,), jnp.int32)
    return jax.ShapeDtypeStruct((batch, *layout["shape"]), jnp.float32)


def env_actions(actions: Any, discrete: bool) -> Any:
    """The agent's actions as `env.step` takes them: Discrete as int32 indices [batch] (agents
    give [batch, 1] or [batch]), anything else unchanged. numpy and jax arrays alike."""
    return actions.reshape(actions.shape[0], -1)[:, 0].astype(np.int32) if discrete else actions


def policy_actions(
    agent: Any, obs_mean: jax.Array, obs_std: jax.Array, observations: jax.Array, key: jax.Array, deterministic: bool, discrete: bool
) -> jax.Array:
    """The one policy function (evaluation, video, `Policy`, export): flat raw observations
    [batch, dim], normalized as in training, to the actions `env.step` takes."""
    actions = agent.sample_actions(normalize_observations(observations, obs_mean, obs_std), key, deterministic=deterministic)
    return env_actions(actions, discrete)


@dataclass
class Policy:
    """A run's policy at one checkpoint, on raw environment observations (a batch).

    `policy(observations)` gives the deterministic actions the run's evaluation takes;
    `policy(observations, key, deterministic=False)` samples. Observations follow
    `observation_layout` (a Box observation: an array [batch, *shape]; a Dict: a dict of
    such arrays), actions `action_layout`."""

    agent: Any
    obs_mean: jax.Array
    obs_std: jax.Array
    config: dict[str, Any]
    step: int
    score: float | None
    observation_layout: Layout
    action_layout: Layout
    spec: Any = None  # the evaluation env's DatasetSpec, when known
    _act: Callable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._act = jax.jit(self.actions_fn, static_argnames="deterministic")

    def actions_fn(self, observations: Any, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """The whole pure function, flattening to env actions (what export traces)."""
        flat = flatten(self.observation_layout, observations)
        discrete = self.action_layout["type"] == "Discrete"
        return policy_actions(self.agent, self.obs_mean, self.obs_std, flat, key, deterministic, discrete)

    def __call__(self, observations: Any, key: jax.Array | None = None, deterministic: bool = True) -> np.ndarray:
        if key is None:
            if not deterministic:
                raise ValueError("sampling actions (deterministic=False) needs a key: policy(observations, key, deterministic=False)")
            key = jax.random.PRNGKey(0)  # unused by deterministic actions
        return np.asarray(self._act(observations, key, deterministic=deterministic))
