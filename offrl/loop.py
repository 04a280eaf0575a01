"""The pure JAX core every run shares: the loop state, the fused update chunk, and the seed
axis (stacking, slicing, sharding over devices).

The whole loop state (agent, RNG, step, normalizer) is one pytree, which is what makes
resume exact and checkpoints complete. `updates_per_call` updates (batch sampling included)
run inside one jitted `lax.scan`, so Python is touched only between calls; several seeds (and
--vmap combinations) are one leading axis of that pytree, trained by one `vmap` of the same
chunk. Nothing here knows where the data comes from or what is logged: that is
`offrl.runner.run`'s part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:
    from offrl.buffer import ReplayBuffer


@flax.struct.dataclass
class LoopState:
    agent: Any
    rng: jax.Array
    step: jax.Array
    obs_mean: jax.Array
    obs_std: jax.Array

    @classmethod
    def initial(cls, agent: Any, rng: jax.Array, obs_dim: int) -> LoopState:
        """Step 0, observations left as they are (zero mean, unit scale)."""
        return cls(
            agent=agent,
            rng=rng,
            step=jnp.asarray(0, jnp.int32),
            obs_mean=jnp.zeros(obs_dim, jnp.float32),
            obs_std=jnp.ones(obs_dim, jnp.float32),
        )


def default_sample_batch(buffer: ReplayBuffer, key: jax.Array, config: Any) -> dict[str, jax.Array]:
    return buffer.sample(key, config.batch_size)


def make_train_chunk(agent_cls: type, num_updates: int) -> Callable[[LoopState, ReplayBuffer], tuple[LoopState, dict]]:
    """`num_updates` fused updates: (state, buffer) -> (state, per-update info stacked)."""
    sample_batch = getattr(agent_cls, "sample_batch", default_sample_batch)

    def train_chunk(state: LoopState, buffer: ReplayBuffer) -> tuple[LoopState, dict]:
        def one_update(state: LoopState, _: None) -> tuple[LoopState, dict]:
            rng, batch_key = jax.random.split(state.rng)
            batch = sample_batch(buffer, batch_key, state.agent.config)
            agent, info = state.agent.update(batch)
            return state.replace(agent=agent, rng=rng, step=state.step + 1), info

        return jax.lax.scan(one_update, state, None, length=num_updates)

    return jax.jit(train_chunk)


def make_seeds_train_chunk(agent_cls: type, num_updates: int) -> Callable[[LoopState, ReplayBuffer], tuple[LoopState, dict]]:
    """`make_train_chunk` over a leading seed axis of the state: one compilation for all seeds,
    the dataset shared. With several devices the seed axis is sharded (see `shard_seeds`).

    The input state is donated: the new state reuses its buffers instead of holding a second
    copy of every seed's parameters and optimizer moments on the device, so the caller must
    not touch the state it passed in again."""
    return jax.jit(jax.vmap(make_train_chunk(agent_cls, num_updates), in_axes=(0, None)), donate_argnums=0)


def stack_states(states: list[Any]) -> Any:
    """One state with a leading seed axis. Seeds built by separate `create` calls hold equal
    but distinct static parts (apply_fn, optimizer), so the first one's structure is kept."""
    structure = jax.tree_util.tree_structure(states[0])
    columns = zip(*(jax.tree_util.tree_leaves(state) for state in states))
    return jax.tree_util.tree_unflatten(structure, [jnp.stack(leaves) for leaves in columns])


def seed_slice(state: Any, index: int) -> Any:
    return jax.tree_util.tree_map(lambda leaf: leaf[index], state)


def device_mesh() -> jax.sharding.Mesh:
    """All devices on one axis, the seed axis."""
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("seeds",))


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh | None:
    """A 1-D device mesh over the seed axis, when there are several devices and they divide it."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if num_seeds % len(devices):
        print(f"offrl: {num_seeds} seeds do not split evenly over {len(devices)} devices; using one device")
        return None
    return device_mesh()


def shard_seeds(state: Any) -> Any:
    """Place the leading (seed) axis of every leaf across the devices; jit then runs each
    device's seeds where they live (GSPMD), with no change to the update code."""
    mesh = seed_mesh(int(jax.tree_util.tree_leaves(state)[0].shape[0]))
    if mesh is None:
        return state
    return jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")))


def replicate(tree: Any) -> Any:
    """A full copy of `tree` (the dataset) on every device."""
    if len(jax.devices()) == 1:
        return tree
    return jax.device_put(tree, jax.sharding.NamedSharding(device_mesh(), jax.sharding.PartitionSpec()))


def with_config_hyperparameters(restored: LoopState, fresh: LoopState) -> LoopState:
    """The restored state with the hyperparameters of the state built from the config (the
    agent's config leaves, the optimizers' injected learning rates): the config decides the
    hyperparameters, the checkpoint what was learned, so a run resumed with an edited config
    (e.g. a lower learning rate) trains with the edited values, as when they were constants."""
    from offrl.config import is_config

    injected = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)

    def is_hyperparameters(node: Any) -> bool:
        return is_config(node) or isinstance(node, injected)

    def pick(restored_node: Any, fresh_node: Any) -> Any:
        if isinstance(fresh_node, injected):
            return restored_node._replace(hyperparams=fresh_node.hyperparams)
        return fresh_node if is_config(fresh_node) else restored_node

    return jax.tree_util.tree_map(pick, restored, fresh, is_leaf=is_hyperparameters)
