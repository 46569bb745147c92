"""Toy data sets and training subsets, deterministic given a key.

All generators return ``float32`` arrays of shape ``(n, D)`` unless ``dtype``
is given; they are pure (key in, arrays out).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks


def two_point(m: float = 1.0, dtype=jnp.float32) -> jax.Array:
  """The 1D two-point training set ``{−m, +m}`` as shape ``(2, 1)``."""
  _checks.check_positive("m", m)
  return jnp.asarray([[-m], [m]], dtype)


class GaussianMixture(NamedTuple):
  """Isotropic Gaussian mixture ``Σ_k w_k N(μ_k, s_k² I)``."""

  means: jax.Array    # (K, D)
  stds: jax.Array     # (K,)
  weights: jax.Array  # (K,), sums to 1

  @property
  def dim(self) -> int:
    return int(self.means.shape[-1])


def gaussian_mixture(means, stds, weights=None, dtype=jnp.float32) -> GaussianMixture:
  """Build and validate a :class:`GaussianMixture`."""
  means = jnp.asarray(means, dtype)
  _checks.check_ndim("means", means, 2, "(K, D)")
  k = means.shape[0]
  stds = jnp.broadcast_to(jnp.asarray(stds, dtype), (k,))
  weights = jnp.full((k,), 1.0 / k, dtype) if weights is None else jnp.asarray(weights, dtype)
  if weights.shape != (k,):
    raise ValueError(f"`weights` must have shape ({k},) matching `means` (K, D); got {weights.shape}.")
  for name, arr in (("means", means), ("stds", stds), ("weights", weights)):
    _checks.check_finite(name, arr)
  _checks.check_positive("stds", stds)
  if _checks.is_concrete(weights) and (np.any(np.asarray(weights) < 0) or
                                       not np.isclose(float(np.sum(weights)), 1.0, atol=1e-5)):
    raise ValueError(f"`weights` must be non-negative and sum to 1; got {weights}.")
  return GaussianMixture(means, stds, weights)


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.15, dtype=jnp.float32) -> GaussianMixture:
  """``num_modes`` equal-weight 2D Gaussians evenly spaced on a circle."""
  ang = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
  return gaussian_mixture(means, std, dtype=dtype)


def two_point_gmm(m: float = 1.0, std: float = 0.1, dtype=jnp.float32) -> GaussianMixture:
  """The 1D target ``½N(−m, s²) + ½N(m, s²)`` used to score the two-point toy."""
  return gaussian_mixture([[-m], [m]], std, dtype=dtype)


def sample_mixture(key: jax.Array, gmm: GaussianMixture, n: int):
  """Draw ``n`` points from ``gmm``; returns ``(x (n, D), component (n,))``."""
  kc, kz = jax.random.split(key)
  comp = jax.random.categorical(kc, jnp.log(gmm.weights), shape=(n,))
  z = jax.random.normal(kz, (n, gmm.dim), gmm.means.dtype)
  return gmm.means[comp] + gmm.stds[comp, None] * z, comp


def mixture_log_prob(gmm: GaussianMixture, x: jax.Array) -> jax.Array:
  """``log Σ_k w_k N(x; μ_k, s_k² I)`` for ``x`` of shape ``(n, D)``."""
  d = gmm.dim
  sq = jnp.sum((x[:, None, :] - gmm.means[None]) ** 2, -1)
  logn = -0.5 * sq / gmm.stds[None] ** 2 - d * jnp.log(gmm.stds)[None] - 0.5 * d * jnp.log(2 * jnp.pi)
  return jax.scipy.special.logsumexp(logn + jnp.log(gmm.weights)[None], axis=-1)


def subset(key: jax.Array, x: jax.Array, n: int) -> jax.Array:
  """A deterministic random subset of ``n`` distinct rows of ``x`` (without replacement)."""
  if not 0 < n <= x.shape[0]:
    raise ValueError(f"`n` must be in [1, {x.shape[0]}] (rows of `x`); got {n}.")
  idx = jax.random.permutation(key, x.shape[0])[:n]
  return x[jnp.sort(idx)]


def train_test_split(key: jax.Array, x: jax.Array, num_train: int):
  """Split rows of ``x`` into ``(train (num_train, D), held_out (rest, D))`` deterministically."""
  if not 0 < num_train < x.shape[0]:
    raise ValueError(f"`num_train` must be in [1, {x.shape[0] - 1}]; got {num_train}.")
  perm = jax.random.permutation(key, x.shape[0])
  return x[perm[:num_train]], x[perm[num_train:]]


def two_point_velocity(x: jax.Array, t: jax.Array, m: float = 1.0) -> jax.Array:
  """Exact FM velocity for data ``{−m, +m}`` and noise ``N(0, 1)`` (linear path, data at t = 1).

  ``u*(x, t) = (m·tanh(t m x / (1 − t)²) − x) / (1 − t)``, odd in ``x``; valid for ``t < 1``.
  """
  return (m * jnp.tanh(t * m * x / (1.0 - t) ** 2) - x) / (1.0 - t)


def two_point_density(x: jax.Array, t: jax.Array, m: float = 1.0) -> jax.Array:
  """Marginal density of ``x_t = (1−t) x0 + t x1``: ``½N(x; tm, (1−t)²) + ½N(x; −tm, (1−t)²)``."""
  s = 1.0 - t
  g = lambda mu: jnp.exp(-0.5 * ((x - mu) / s) ** 2) / (s * jnp.sqrt(2 * jnp.pi))
  return 0.5 * (g(t * m) + g(-t * m))


# ---------------------------------------------------------------------------
# Images: scikit-learn digits (bundled, offline) and TFDS mnist / cifar10 (lazy import).


def to_unit_range(images: np.ndarray, max_value: float) -> np.ndarray:
  """Scale pixel values from ``[0, max_value]`` to ``[−1, 1]``."""
  return (2.0 * np.asarray(images, np.float32) / max_value - 1.0).astype(np.float32)


def load_digits(flatten: bool = False):
  """scikit-learn's bundled 8×8 digits (1797 real images, no network), scaled to [−1, 1].

  Returns ``(images (1797, 8, 8, 1) or (1797, 64), labels (1797,))`` as numpy arrays.
  """
  from sklearn import datasets
  d = datasets.load_digits()
  x = to_unit_range(d.images, 16.0)
  x = x.reshape(len(x), -1) if flatten else x[..., None]
  return x, d.target.astype(np.int32)


def load_tfds(name: str, split: str = "train", max_examples: int | None = None, batch_size: int = 1024):
  """Load ``mnist`` or ``cifar10`` through ``tfds.data_source`` (array_record; no tensorflow needed).

  Images are scaled to [−1, 1] as ``float32 (N, H, W, C)``; labels ``int32 (N,)``.
  Downloads need network: on an offline machine prepare the data beforehand
  (tests use ``tfds.testing.mock_data``).
  """
  if name not in ("mnist", "cifar10"):
    raise ValueError(f"`name` must be 'mnist' or 'cifar10'; got {name!r}.")
  import tensorflow_datasets as tfds  # lazy: the core library works without TFDS
  source = tfds.data_source(name, split=split)
  n = len(source) if max_examples is None else min(max_examples, len(source))
  images, labels = [], []
  for start in range(0, n, batch_size):
    batch = [source[i] for i in range(start, min(n, start + batch_size))]
    images.append(np.stack([ex["image"] for ex in batch]))
    labels.append(np.asarray([ex["label"] for ex in batch]))
  return to_unit_range(np.concatenate(images), 255.0), np.concatenate(labels).astype(np.int32)


def class_subset(key: jax.Array, images: np.ndarray, labels: np.ndarray, n: int, classes: Sequence[int] | None = None):
  """Deterministic subset of ``n`` images (optionally restricted to ``classes``); returns ``(images, labels)``."""
  idx = np.arange(len(images)) if classes is None else np.flatnonzero(np.isin(labels, list(classes)))
  if not 0 < n <= len(idx):
    raise ValueError(f"`n` must be in [1, {len(idx)}] for the selected classes; got {n}.")
  pick = np.sort(np.asarray(jax.random.permutation(key, len(idx)))[:n])
  return images[idx[pick]], labels[idx[pick]]
