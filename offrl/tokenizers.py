"""Maps between continuous actions and discrete tokens, for categorical policies.

K-means over joint actions keeps the joint structure of the data (e.g. maze actions on
the edge of the unit box or circle take few tokens); per-dimension bins are the simple
factorized alternative.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


class KMeansTokenizer(flax.struct.PyTreeNode):
    codebook: jax.Array  # [num_tokens, action_dim]

    @property
    def num_tokens(self) -> int:
        return int(self.codebook.shape[0])

    def encode(self, actions: jax.Array) -> jax.Array:
        """Index of the nearest codeword, int32 [...]."""
        distances = ((actions[..., None, :] - self.codebook) ** 2).sum(-1)
        return jnp.argmin(distances, axis=-1).astype(jnp.int32)

    def decode(self, tokens: jax.Array) -> jax.Array:
        return self.codebook[tokens]


class BinTokenizer(flax.struct.PyTreeNode):
    low: jax.Array  # [action_dim]
    high: jax.Array  # [action_dim]
    num_bins: int = flax.struct.field(pytree_node=False)

    def encode(self, actions: jax.Array) -> jax.Array:
        """Bin index per dimension, int32 [..., action_dim]."""
        fraction = (actions - self.low) / (self.high - self.low)
        return jnp.clip(jnp.floor(fraction * self.num_bins), 0, self.num_bins - 1).astype(jnp.int32)

    def decode(self, tokens: jax.Array) -> jax.Array:
        """Bin centres."""
        width = (self.high - self.low) / self.num_bins
        return self.low + (tokens + 0.5) * width


def kmeans(points: jax.Array, num_clusters: int, key: jax.Array, iterations: int = 50) -> jax.Array:
    """Lloyd's algorithm from a k-means++ start; returns the centroids [num_clusters, dim]."""
    points = jnp.asarray(points, jnp.float32)
    n = points.shape[0]
    first_key, key = jax.random.split(key)
    centroids = jnp.zeros((num_clusters, points.shape[1]), points.dtype)
    centroids = centroids.at[0].set(points[jax.random.randint(first_key, (), 0, n)])
    nearest = ((points - centroids[0]) ** 2).sum(-1)

    def seed_step(i, carry):
        centroids, nearest, key = carry
        key, pick_key = jax.random.split(key)
        # k-means++: pick proportional to the squared distance to the nearest chosen centroid.
        choice = jax.random.categorical(pick_key, jnp.log(nearest + 1e-12))
        centroids = centroids.at[i].set(points[choice])
        nearest = jnp.minimum(nearest, ((points - points[choice]) ** 2).sum(-1))
        return centroids, nearest, key

    centroids, _, _ = jax.lax.fori_loop(1, num_clusters, seed_step, (centroids, nearest, key))

    def lloyd_step(_, centroids):
        assignment = jnp.argmin(((points[:, None, :] - centroids) ** 2).sum(-1), axis=1)
        one_hot = jax.nn.one_hot(assignment, num_clusters, dtype=points.dtype)
        counts = one_hot.sum(0)
        sums = one_hot.T @ points
        # An empty cluster keeps its centroid rather than collapsing to the origin.
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts[:, None], 1.0), centroids)

    return jax.lax.fori_loop(0, iterations, lloyd_step, centroids)


def fit_tokenizer(
    kind: str, actions: jax.Array, key: jax.Array, *, num_tokens: int, num_bins: int, iterations: int = 50
) -> KMeansTokenizer | BinTokenizer:
    actions = jnp.asarray(actions, jnp.float32)
    if kind == "kmeans":
        return KMeansTokenizer(codebook=jax.jit(kmeans, static_argnums=(1, 3))(actions, num_tokens, key, iterations))
    if kind == "bins":
        return BinTokenizer(low=actions.min(0), high=actions.max(0) + 1e-6, num_bins=num_bins)
    raise ValueError(f"unknown tokenizer {kind!r}; valid: kmeans, bins")
