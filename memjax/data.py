"""Toy data sets and training subsets, deterministic given a key.

All generators return ``float32`` arrays of shape ``(n, D)`` unless ``dtype``
is given; they are pure (key in, arrays out).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks


def two_point(m: float = 1.0, dtype=jnp.float32) -> jax.Array:
  """The 1D two-point training set ``{−m, +m}`` as shape ``(2, 1)``.

  Args:
    m: half the distance between the points, ``> 0``.
    dtype: output dtype.

  Returns:
    ``(2, 1)`` array.

  Raises:
    ValueError: if ``m`` is not positive.
  """
  _checks.check_positive("m", m)
  return jnp.asarray([[-m], [m]], dtype)


class GaussianMixture(NamedTuple):
  """Isotropic Gaussian mixture ``Σ_k w_k N(μ_k, s_k² I)``; ``dim`` is the property ``D``.

  Attributes:
    means: ``(K, D)`` component means ``μ_k``.
    stds: ``(K,)`` standard deviations ``s_k``.
    weights: ``(K,)`` weights ``w_k``, summing to 1.
  """

  means: jax.Array  # (K, D)
  stds: jax.Array  # (K,)
  weights: jax.Array  # (K,), sums to 1

  @property
  def dim(self) -> int:
    return int(self.means.shape[-1])


def gaussian_mixture(means, stds, weights=None, dtype=jnp.float32) -> GaussianMixture:
  """Build and validate a :class:`GaussianMixture`.

  Args:
    means: ``(K, D)``.
    stds: ``(K,)`` or a scalar, positive.
    weights: ``(K,)`` non-negative, summing to 1 (default: equal).
    dtype: array dtype.

  Returns:
    :class:`GaussianMixture`.

  Raises:
    ValueError: on shape mismatches, NaN/inf, non-positive ``stds`` or invalid ``weights``.
  """
  means = jnp.asarray(means, dtype)
  _checks.check_ndim("means", means, 2, "(K, D)")
  k = means.shape[0]
  stds = jnp.broadcast_to(jnp.asarray(stds, dtype), (k,))
  weights = jnp.full((k,), 1.0 / k, dtype) if weights is None else jnp.asarray(weights, dtype)
  if weights.shape != (k,):
    raise ValueError(
      f"`weights` must have shape ({k},) matching `means` (K, D); got {weights.shape}."
    )
  for name, arr in (("means", means), ("stds", stds), ("weights", weights)):
    _checks.check_finite(name, arr)
  _checks.check_positive("stds", stds)
  if _checks.is_concrete(weights) and (
    np.any(np.asarray(weights) < 0) or not np.isclose(float(np.sum(weights)), 1.0, atol=1e-5)
  ):
    raise ValueError(f"`weights` must be non-negative and sum to 1; got {weights}.")
  return GaussianMixture(means, stds, weights)


def ring_mixture(
  num_modes: int = 8, radius: float = 2.0, std: float = 0.15, dtype=jnp.float32
) -> GaussianMixture:
  """``num_modes`` equal-weight 2D Gaussians ``N(μ_k, std² I)`` evenly spaced on a circle.

  Args:
    num_modes: ``K``.
    radius: circle radius.
    std: component standard deviation.
    dtype: array dtype.

  Returns:
    :class:`GaussianMixture`.
  """
  ang = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
  return gaussian_mixture(means, std, dtype=dtype)


def two_point_gmm(m: float = 1.0, std: float = 0.1, dtype=jnp.float32) -> GaussianMixture:
  """The 1D target ``½N(−m, s²) + ½N(m, s²)`` used to score the two-point toy.

  Args:
    m: the points ``±m``.
    std: ``s``.
    dtype: array dtype.

  Returns:
    :class:`GaussianMixture`.
  """
  return gaussian_mixture([[-m], [m]], std, dtype=dtype)


def sample_mixture(key: jax.Array, gmm: GaussianMixture, n: int):
  """Draw ``n`` points from ``gmm``: a component ``k ~ w``, then ``x ~ N(μ_k, s_k² I)``.

  Args:
    key: PRNG key.
    gmm: :class:`GaussianMixture`.
    n: number of points.

  Returns:
    ``(x (n, D), component (n,))``.
  """
  kc, kz = jax.random.split(key)
  comp = jax.random.categorical(kc, jnp.log(gmm.weights), shape=(n,))
  z = jax.random.normal(kz, (n, gmm.dim), gmm.means.dtype)
  return gmm.means[comp] + gmm.stds[comp, None] * z, comp


def mixture_log_prob(gmm: GaussianMixture, x: jax.Array) -> jax.Array:
  """``log Σ_k w_k N(x; μ_k, s_k² I)`` by log-sum-exp.

  Args:
    gmm: :class:`GaussianMixture`.
    x: points ``(n, D)``.

  Returns:
    ``(n,)``.
  """
  d = gmm.dim
  sq = jnp.sum((x[:, None, :] - gmm.means[None]) ** 2, -1)
  logn = (
    -0.5 * sq / gmm.stds[None] ** 2 - d * jnp.log(gmm.stds)[None] - 0.5 * d * jnp.log(2 * jnp.pi)
  )
  return jax.scipy.special.logsumexp(logn + jnp.log(gmm.weights)[None], axis=-1)


def subset(key: jax.Array, x: jax.Array, n: int) -> jax.Array:
  """A deterministic random subset of ``n`` distinct rows of ``x`` (without replacement).

  Args:
    key: PRNG key.
    x: array ``(N, ...)``.
    n: rows to keep, ``1 ≤ n ≤ N``.

  Returns:
    ``(n, ...)``, rows in their original order.

  Raises:
    ValueError: if ``n`` is out of range.
  """
  if not 0 < n <= x.shape[0]:
    raise ValueError(f"`n` must be in [1, {x.shape[0]}] (rows of `x`); got {n}.")
  idx = jax.random.permutation(key, x.shape[0])[:n]
  return x[jnp.sort(idx)]


def train_test_split(key: jax.Array, x: jax.Array, num_train: int):
  """Split rows of ``x`` into ``(train, held_out)`` deterministically given ``key``.

  Args:
    key: PRNG key.
    x: array ``(N, D)``.
    num_train: training rows, ``1 ≤ num_train ≤ N − 1``.

  Returns:
    ``(train (num_train, D), held_out (N − num_train, D))``.

  Raises:
    ValueError: if ``num_train`` is out of range.
  """
  if not 0 < num_train < x.shape[0]:
    raise ValueError(f"`num_train` must be in [1, {x.shape[0] - 1}]; got {num_train}.")
  perm = jax.random.permutation(key, x.shape[0])
  return x[perm[:num_train]], x[perm[num_train:]]


def two_point_velocity(x: jax.Array, t: jax.Array, m: float = 1.0) -> jax.Array:
  """Exact FM velocity ``u*(x, t) = (m·tanh(t m x / (1 − t)²) − x) / (1 − t)`` for ``{−m, +m}``.

  Noise ``N(0, 1)``, linear path with data at ``t = 1``; the field is odd in ``x`` and valid for
  ``t < 1``.

  Args:
    x: points, any shape.
    t: times broadcastable to ``x``, ``< 1``.
    m: the data points ``±m``.

  Returns:
    ``u*(x, t)`` of the broadcast shape.
  """
  return (m * jnp.tanh(t * m * x / (1.0 - t) ** 2) - x) / (1.0 - t)


def two_point_density(x: jax.Array, t: jax.Array, m: float = 1.0) -> jax.Array:
  """Marginal density of ``x_t = (1−t) x0 + t x1``: ``½N(x; tm, (1−t)²) + ½N(x; −tm, (1−t)²)``.

  Args:
    x: points, any shape.
    t: times broadcastable to ``x``.
    m: the data points ``±m``.

  Returns:
    ``p_t(x)`` of the broadcast shape.
  """
  s = 1.0 - t
  g = lambda mu: jnp.exp(-0.5 * ((x - mu) / s) ** 2) / (s * jnp.sqrt(2 * jnp.pi))
  return 0.5 * (g(t * m) + g(-t * m))


# ---------------------------------------------------------------------------
# Images: scikit-learn digits (bundled, offline) and TFDS mnist / cifar10 (lazy import).


def to_unit_range(images: np.ndarray, max_value: float) -> np.ndarray:
  """Scale pixel values from ``[0, max_value]`` to ``[−1, 1]``: ``2x/max_value − 1``.

  Args:
    images: pixel array.
    max_value: the largest pixel value (e.g. 16 for scikit-learn's digits, 255 for bytes).

  Returns:
    float32 numpy array.
  """
  return (2.0 * np.asarray(images, np.float32) / max_value - 1.0).astype(np.float32)


def load_digits(flatten: bool = False):
  """scikit-learn's bundled 8×8 digits (1797 real images, no network), scaled to ``[−1, 1]``.

  Args:
    flatten: return ``(1797, 64)`` instead of ``(1797, 8, 8, 1)``.

  Returns:
    ``(images, labels (1797,))`` as numpy arrays.
  """
  from sklearn import datasets

  d = datasets.load_digits()
  x = to_unit_range(d.images, 16.0)
  x = x.reshape(len(x), -1) if flatten else x[..., None]
  return x, d.target.astype(np.int32)


def load_tfds(
  name: str, split: str = "train", max_examples: int | None = None, batch_size: int = 1024
):
  """Load ``mnist`` or ``cifar10`` through ``tfds.data_source`` (array_record; no tensorflow).

  Images are scaled to ``[−1, 1]`` as ``float32 (N, H, W, C)``. Downloads need network: on an
  offline machine prepare the data beforehand (tests use ``tfds.testing.mock_data``).

  Args:
    name: ``"mnist"`` or ``"cifar10"``.
    split: the TFDS split.
    max_examples: keep the first ``max_examples`` (``None``: all).
    batch_size: records read at a time.

  Returns:
    ``(images float32 (N, H, W, C), labels int32 (N,))``.

  Raises:
    ValueError: if ``name`` is not supported.
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


def class_subset(
  key: jax.Array,
  images: np.ndarray,
  labels: np.ndarray,
  n: int,
  classes: Sequence[int] | None = None,
):
  """Deterministic subset of ``n`` images, optionally restricted to ``classes``.

  Args:
    key: PRNG key.
    images: ``(N, ...)``.
    labels: ``(N,)``.
    n: images to keep.
    classes: labels to draw from (``None``: all).

  Returns:
    ``(images (n, ...), labels (n,))``.

  Raises:
    ValueError: if ``n`` exceeds the images of the selected classes.
  """
  idx = (
    np.arange(len(images)) if classes is None else np.flatnonzero(np.isin(labels, list(classes)))
  )
  if not 0 < n <= len(idx):
    raise ValueError(f"`n` must be in [1, {len(idx)}] for the selected classes; got {n}.")
  pick = np.sort(np.asarray(jax.random.permutation(key, len(idx)))[:n])
  return images[idx[pick]], labels[idx[pick]]


# ---------------------------------------------------------------------------
# Manifold mixtures with analytic local intrinsic dimension.

#: The kinds of :class:`ManifoldMixture` components.
MANIFOLD_KINDS = ("affine", "sphere")


class ManifoldMixture(NamedTuple):
  """Equal-weight mixture of ``K`` manifolds in ``R^D`` with known dimensions.

  Component ``k`` of kind ``"affine"`` is ``c_k + A_k u``, ``u ~ U[−h, h]^{d_k}`` (a flat
  ``d_k``-dim piece, LID = ``d_k``); of kind ``"sphere"`` it is ``c_k + r A_k v``, ``v`` uniform on
  the unit sphere ``S^{d_k} ⊂ R^{d_k+1}`` (curved, LID = ``d_k``). ``A_k`` has orthonormal
  columns; ``ambient_dim`` is the property ``D``.

  Attributes:
    kinds: ``(K,)`` strings in :data:`MANIFOLD_KINDS`.
    dims: ``(K,)`` ints, the analytic LID of each component.
    centres: ``(K, D)`` centres ``c_k``.
    frames: ``(K,)`` arrays ``A_k``, ``(D, d_k)`` or ``(D, d_k + 1)``.
    scale: ``h`` (affine half-width) or ``r`` (sphere radius).
  """

  kinds: tuple  # (K,) strings in MANIFOLD_KINDS
  dims: tuple  # (K,) ints, the analytic LID of each component
  centres: jax.Array  # (K, D)
  frames: tuple  # (K,) arrays (D, d_k) or (D, d_k + 1)
  scale: float  # h (affine half-width) or r (sphere radius)

  @property
  def ambient_dim(self) -> int:
    return int(self.centres.shape[-1])


def manifold_mixture(
  key: jax.Array,
  dims: Sequence[int] = (2, 4, 8),
  kinds: Sequence[str] | None = None,
  ambient_dim: int = 10,
  scale: float = 1.5,
  separation: float = 8.0,
  dtype=jnp.float32,
) -> ManifoldMixture:
  """Random frames and centres for a :class:`ManifoldMixture` (deterministic given ``key``).

  Centres are ``separation·q_k`` with ``q_k`` orthonormal (``K ≤ D``), so pieces are
  ``separation·√2`` apart; ``kinds`` defaults to alternating affine / sphere.

  Args:
    key: PRNG key.
    dims: intrinsic dimensions ``d_k``.
    kinds: one of :data:`MANIFOLD_KINDS` per component.
    ambient_dim: ``D``.
    scale: ``h`` or ``r``.
    separation: distance scale of the centres.
    dtype: array dtype.

  Returns:
    :class:`ManifoldMixture`.

  Raises:
    ValueError: if ``kinds`` does not match ``dims``, there are more pieces than ``D``, a piece
      does not fit in ``R^D``, or ``scale``/``separation`` is not positive.

  References:
    Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
    arXiv:2411.00113 (manifold mixtures as LID benchmarks).
  """
  dims = tuple(int(d) for d in dims)
  kinds = (
    tuple(kinds) if kinds is not None else tuple(MANIFOLD_KINDS[i % 2] for i in range(len(dims)))
  )
  if len(kinds) != len(dims) or any(k not in MANIFOLD_KINDS for k in kinds):
    raise ValueError(f"`kinds` must be {len(dims)} entries from {MANIFOLD_KINDS}; got {kinds}.")
  if not 0 < len(dims) <= ambient_dim:
    raise ValueError(f"need 1 <= len(dims) <= ambient_dim={ambient_dim}; got {len(dims)}.")
  for d, kind in zip(dims, kinds):
    if not 1 <= d + (kind == "sphere") <= ambient_dim:
      raise ValueError(f"`dims` entry {d} ({kind}) does not fit in R^{ambient_dim}.")
  _checks.check_positive("scale", scale)
  _checks.check_positive("separation", separation)
  kc, *kf = jax.random.split(key, len(dims) + 1)
  orth = lambda k, m: jnp.linalg.qr(jax.random.normal(k, (ambient_dim, m)))[0]
  centres = separation * orth(kc, len(dims)).T
  frames = tuple(
    orth(k, d + (kind == "sphere")).astype(dtype) for k, d, kind in zip(kf, dims, kinds)
  )
  return ManifoldMixture(kinds, dims, centres.astype(dtype), frames, float(scale))


def sample_manifold_mixture(key: jax.Array, mix: ManifoldMixture, n: int):
  """Draw ``n`` points with the analytic LID of each.

  Args:
    key: PRNG key.
    mix: :class:`ManifoldMixture`.
    n: number of points.

  Returns:
    ``(x (n, D), component (n,), lid (n,))``.
  """
  kc, *ks = jax.random.split(key, len(mix.dims) + 1)
  comp = jax.random.randint(kc, (n,), 0, len(mix.dims))
  dtype = mix.centres.dtype
  x = jnp.zeros((n, mix.ambient_dim), dtype)
  for k, (kind, frame) in enumerate(zip(mix.kinds, mix.frames)):
    m = frame.shape[1]
    if kind == "affine":
      u = jax.random.uniform(ks[k], (n, m), dtype, -mix.scale, mix.scale)
    else:
      g = jax.random.normal(ks[k], (n, m), dtype)
      u = mix.scale * g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    x = jnp.where((comp == k)[:, None], mix.centres[k][None, :] + u @ frame.T, x)
  return x, comp, jnp.asarray(mix.dims)[comp]


# Exact density of the noised mixture ``y = ψx + σε``, ``x ~ mix`` (for exact-score FLIPD).

_SERIES_TERMS = 120  # terms of the power series of I_ν (all positive: no cancellation)


def _bessel_switch(nu: float) -> float:
  """``κ`` above which ``log I_ν`` uses the upward recurrence (accurate there) over the series."""
  return 20.0 + nu


def _log_ive_recurrence(nu: float, z: jax.Array) -> jax.Array:
  """``log(e^{−z} I_ν(z))`` for ``ν ∈ {−½, 0, ½, 1, …}`` by upward recurrence
  ``I_{ν+1} = I_{ν−1} − (2ν/z) I_ν`` from ``I_0, I_1`` (integer ν) or ``I_{∓½}`` (half-integer ν,
  closed forms ``√(2/(πz)) cosh z``, ``√(2/(πz)) sinh z``). Accurate for ``z ≳ 20 + ν``.
  """
  if float(2 * nu).is_integer() and round(2 * nu) % 2 == 0:
    prev, cur, order = jax.scipy.special.i1e(z), jax.scipy.special.i0e(z), 0.0
  else:
    pre, tail = jnp.sqrt(2.0 / (jnp.pi * z)), jnp.exp(-2.0 * z)
    prev, cur, order = None, 0.5 * pre * (1.0 + tail), -0.5
    if nu > -0.5:
      prev, cur, order = cur, 0.5 * pre * (1.0 - tail), 0.5
  while order < nu - 1e-9:
    prev, cur = cur, prev - (2.0 * order / z) * cur
    order += 1.0
  return jnp.log(cur)


def _log_sphere_mean_exp(nu: float, kappa_sq: jax.Array) -> jax.Array:
  """``h(κ) = log E_u exp(κ u₁) = log[Γ(ν+1) (2/κ)^ν I_ν(κ)]`` for ``u`` uniform on the unit
  sphere of ``R^{2ν+2}``, as a smooth function of ``κ²`` (power series below the switch, scaled
  recurrence above it; each branch only sees arguments in its own range, so gradients are finite).
  """
  switch = _bessel_switch(nu)
  small = kappa_sq < switch**2
  ks = jnp.clip(jnp.where(small, kappa_sq, 0.0), jnp.finfo(kappa_sq.dtype).tiny, None)
  k = jnp.arange(_SERIES_TERMS, dtype=kappa_sq.dtype)
  terms = (
    k * (jnp.log(ks[..., None]) - np.log(4.0))  # ks >= tiny (normal): no denormal flush to 0
    - jax.scipy.special.gammaln(k + 1.0)
    - jax.scipy.special.gammaln(k + nu + 1.0)
  )
  h_small = jax.scipy.special.gammaln(nu + 1.0) + jax.scipy.special.logsumexp(terms, axis=-1)
  kl = jnp.sqrt(jnp.where(small, switch**2, kappa_sq))
  h_large = (
    jax.scipy.special.gammaln(nu + 1.0) + nu * jnp.log(2.0 / kl) + kl + _log_ive_recurrence(nu, kl)
  )
  return jnp.where(small, h_small, h_large)


def _log1mexp(x: jax.Array) -> jax.Array:
  """``log(1 − e^x)`` for ``x < 0``, stable at both ends."""
  x_hi = jnp.where(x > -np.log(2.0), x, -1.0)
  x_lo = jnp.where(x > -np.log(2.0), -1.0, x)
  return jnp.where(x > -np.log(2.0), jnp.log(-jnp.expm1(x_hi)), jnp.log1p(-jnp.exp(x_lo)))


def _log_ndtr_diff(a: jax.Array, b: jax.Array) -> jax.Array:
  """``log(Φ(b) − Φ(a))`` for ``a < b``, using ``Φ(b) − Φ(a) = Φ(−a) − Φ(−b)`` to stay in the lower
  tail (no cancellation far from the interval)."""
  flip = a + b > 0
  lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  lhi = jax.scipy.special.log_ndtr(hi)
  return lhi + _log1mexp(jax.scipy.special.log_ndtr(lo) - lhi)


def _component_log_prob(kind, centre, frame, scale, y, psi, sigma):
  """``log p_k(y)`` of one noised component at one point ``y (D,)``."""
  dim = y.shape[-1]
  yc = y - psi * centre
  par = frame.T @ yc
  sq_perp = jnp.sum((yc - frame @ par) ** 2)
  m = frame.shape[1]
  if kind == "affine":  # u ~ U[−h, h]^m: a product of erf factors in the piece's coordinates
    a, b = (par - psi * scale) / sigma, (par + psi * scale) / sigma
    log_par = jnp.sum(_log_ndtr_diff(a, b)) - m * jnp.log(2.0 * psi * scale)
    return -0.5 * (dim - m) * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * sq_perp / sigma**2 + log_par
  # Sphere of radius R in an m-dim subspace: the von Mises–Fisher normaliser in κ = ψRr/σ².
  nu = 0.5 * m - 1.0
  sq_par = jnp.sum(par**2)
  kappa_sq = (psi * scale) ** 2 * sq_par / sigma**4
  log_par = -0.5 * (sq_par + (psi * scale) ** 2) / sigma**2 + _log_sphere_mean_exp(nu, kappa_sq)
  return -0.5 * dim * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * sq_perp / sigma**2 + log_par


def manifold_mixture_log_prob(mix: ManifoldMixture, y: jax.Array, psi, sigma) -> jax.Array:
  """Exact ``log p(y)`` of ``y = ψx + σε``, ``x ~ mix`` (equal weights), ``ε ~ N(0, I)``.

  With ``y_c = y − ψc_k``, ``p = A_kᵀy_c`` (in-piece coordinates, ``m`` of them) and ``y_⊥`` the
  rest, each component is ``N(y_⊥; 0, σ²I_{D−m})`` times, for an affine piece
  (``u ~ U[−h, h]^m``), ``Π_i [Φ((p_i + ψh)/σ) − Φ((p_i − ψh)/σ)] / (2ψh)``, and for a sphere of
  radius ``R``, ``(2πσ²)^{−m/2} exp(−(r² + ψ²R²)/(2σ²)) Γ(m/2)(2/κ)^{m/2−1} I_{m/2−1}(κ)`` with
  ``r = |p|``, ``κ = ψRr/σ²`` (``E_u exp(κ u₁)`` of the uniform sphere); components are combined by
  log-sum-exp with weights ``1/K``. The Bessel factor is a positive power series for ``κ < 20 + ν``
  and the scaled upward recurrence above it.

  Args:
    mix: :class:`ManifoldMixture`.
    y: points ``(n, D)``.
    psi: ``ψ``, scalar or ``(n,)``.
    sigma: ``σ``, scalar or ``(n,)``.

  Returns:
    ``(n,)``.

  Raises:
    ValueError: if ``y`` is not ``(n, D)``.
  """
  _checks.check_ndim("y", y, 2, "(n, D)")
  n = y.shape[0]
  psi = jnp.broadcast_to(jnp.asarray(psi, y.dtype), (n,))
  sigma = jnp.broadcast_to(jnp.asarray(sigma, y.dtype), (n,))

  def point(yi, ps, sg):
    comps = [
      _component_log_prob(kind, c.astype(yi.dtype), f.astype(yi.dtype), mix.scale, yi, ps, sg)
      for kind, c, f in zip(mix.kinds, mix.centres, mix.frames)
    ]
    return jax.scipy.special.logsumexp(jnp.stack(comps)) - jnp.log(float(len(comps)))

  return jax.vmap(point)(y, psi, sigma)


def manifold_mixture_score(mix: ManifoldMixture, y: jax.Array, t, schedule) -> jax.Array:
  """Exact score ``∇_y log p_t(y)`` of the mixture noised by ``schedule`` at time ``t``.

  The gradient of :func:`manifold_mixture_log_prob` at ``ψ(t), σ(t)``.

  Args:
    mix: :class:`ManifoldMixture`.
    y: points ``(n, D)``.
    t: time, scalar or ``(n,)``.
    schedule: a :class:`memjax.paths.Schedule`.

  Returns:
    ``(n, D)``.
  """
  t = jnp.broadcast_to(jnp.asarray(t, y.dtype), (y.shape[0],))
  logp = lambda yi, ti: manifold_mixture_log_prob(
    mix, yi[None], schedule.psi(ti), schedule.sigma(ti)
  )[0]
  return jax.vmap(jax.grad(logp))(y, t)


def manifold_mixture_score_field(mix: ManifoldMixture, schedule):
  """The exact score as a batch field ``field(y (B, D), t (B,))`` in the ``score`` parameterisation.

  For :func:`memjax.lid.flipd` with ``parameterisation="score"``: separates estimator error
  from model error.

  Args:
    mix: :class:`ManifoldMixture`.
    schedule: a :class:`memjax.paths.Schedule`.

  Returns:
    A :data:`memjax.paths.BatchField`.
  """

  def field(y, t):
    return manifold_mixture_score(mix, y, t, schedule)

  return field


class VonMisesAtom(NamedTuple):
  """Training set of the von Mises toy: a circle plus a duplicated atom.

  Attributes:
    x: ``(n_circle + copies, 2)`` points.
    is_atom: ``(n_circle + copies,)`` bool.
    lid: ``(n_circle + copies,)`` analytic ``LID*``: 1 on the circle, 0 at the atom.
  """

  x: jax.Array  # (n_circle + copies, 2)
  is_atom: jax.Array  # (n_circle + copies,) bool
  lid: jax.Array  # (n_circle + copies,) analytic LID*: 1 on the circle, 0 at the atom


def von_mises_atom(
  key, n_circle=100, kappa=1.0, mu=0.0, radius=1.0, atom=(0.0, 0.0), copies=20, dtype=jnp.float32
) -> VonMisesAtom:
  """Angles ``θ ~ vonMises(μ, κ)`` on a circle of ``radius`` plus ``copies`` identical atoms.

  The density on the circle is ``∝ exp(κ cos(θ − μ))``, so the arc around ``μ + π`` is sparsely
  populated. Angles are drawn with numpy's ``Generator.vonmises`` seeded from ``key``
  (deterministic).

  Args:
    key: PRNG key.
    n_circle: points on the circle.
    kappa: concentration ``κ``.
    mu: mean angle ``μ``.
    radius: circle radius.
    atom: the duplicated point.
    copies: number of copies of the atom.
    dtype: array dtype.

  Returns:
    :class:`VonMisesAtom`.

  Raises:
    ValueError: if ``n_circle < 1``, ``copies < 0`` or ``radius`` is not positive.

  References:
    Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
    arXiv:2411.00113.
  """
  if n_circle < 1 or copies < 0:
    raise ValueError(f"need `n_circle` >= 1 and `copies` >= 0; got {n_circle}, {copies}.")
  _checks.check_positive("radius", radius)
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  theta = np.random.default_rng(seed).vonmises(mu, kappa, n_circle)
  circle = radius * np.stack([np.cos(theta), np.sin(theta)], -1)
  atoms = np.broadcast_to(np.asarray(atom, np.float64), (copies, 2))
  x = np.concatenate([circle, atoms]).astype(dtype)
  is_atom = np.arange(n_circle + copies) >= n_circle
  return VonMisesAtom(jnp.asarray(x), jnp.asarray(is_atom), jnp.asarray(np.where(is_atom, 0, 1)))


# ---------------------------------------------------------------------------
# Sharpness toys.


def sharp_broad_mixture(
  sharp_mean=(2.5, 2.5),
  sharp_std: float = 0.01,
  broad_std: float = 1.0,
  sharp_weight: float = 0.05,
  dtype=jnp.float32,
) -> GaussianMixture:
  """2D ``w N(μ_s, s_s² I) + (1 − w) N(0, s_b² I)``: a sharp mode (tiny covariance) and a broad one.

  Args:
    sharp_mean: ``μ_s``.
    sharp_std: ``s_s``.
    broad_std: ``s_b``.
    sharp_weight: ``w`` in ``(0, 1)`` (5 % by default).
    dtype: array dtype.

  Returns:
    :class:`GaussianMixture`.

  Raises:
    ValueError: if ``sharp_weight`` is not in ``(0, 1)``.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  if not 0 < sharp_weight < 1:
    raise ValueError(f"`sharp_weight` must be in (0, 1); got {sharp_weight}.")
  return gaussian_mixture(
    [list(sharp_mean), [0.0] * len(sharp_mean)],
    [sharp_std, broad_std],
    [sharp_weight, 1.0 - sharp_weight],
    dtype=dtype,
  )


def duplicated_sample(key: jax.Array, gmm: GaussianMixture, n: int, duplicate: int = 0):
  """``n`` draws from ``gmm`` where every draw of component ``duplicate`` is ONE shared draw.

  Models a duplicated training point (the sharp mode).

  Args:
    key: PRNG key.
    gmm: :class:`GaussianMixture`.
    n: number of draws.
    duplicate: the component whose draws are replaced by one point.

  Returns:
    ``(x (n, D), component (n,), unique (U, D))`` with ``unique`` the distinct rows (for the
    nearest-neighbour ratio).
  """
  x, comp = sample_mixture(key, gmm, n)
  x, comp = np.array(x), np.asarray(comp)
  dup = comp == duplicate
  if dup.any():
    x[dup] = x[np.flatnonzero(dup)[0]]
  unique = np.unique(x, axis=0)
  return jnp.asarray(x), jnp.asarray(comp), jnp.asarray(unique)


class DuplicatedDigits(NamedTuple):
  """Class-conditional digits set: one class generalised, one image duplicated many times.

  Attributes:
    x: ``(N, 64)`` training images (with the copies).
    y: ``(N,)`` labels remapped to 0 (general class) and 1 (duplicated class).
    unique: ``(U, 64)`` distinct training images.
    dup_image: ``(64,)`` the duplicated image.
    held_out: ``(held-out class-0 images, held-out class-1 images)``.
  """

  x: np.ndarray  # (N, 64) training images (with the copies)
  y: np.ndarray  # (N,) labels remapped to 0 (general class) and 1 (duplicated class)
  unique: np.ndarray  # (U, 64) distinct training images
  dup_image: np.ndarray  # (64,) the duplicated image
  held_out: tuple  # (held-out class-0 images, held-out class-1 images)


def duplicated_digits(
  key: jax.Array,
  general_class: int = 0,
  dup_class: int = 1,
  n_general: int = 120,
  n_dup_class_distinct: int = 20,
  copies: int = 100,
) -> DuplicatedDigits:
  """Digits (flattened, ``[−1, 1]``) with one image duplicated ``copies`` times.

  ``n_general`` distinct images of ``general_class`` (label 0) and, with label 1,
  ``n_dup_class_distinct`` distinct images of ``dup_class`` plus one of its images repeated
  ``copies`` times. The remaining images of each class are held out (for quality proxies).

  Args:
    key: PRNG key.
    general_class: the digit of label 0.
    dup_class: the digit of label 1.
    n_general: training images of label 0.
    n_dup_class_distinct: distinct training images of label 1.
    copies: copies of the duplicated image.

  Returns:
    :class:`DuplicatedDigits`.

  Raises:
    ValueError: if a class has too few images to keep some held out.
  """
  images, labels = load_digits(flatten=True)
  kg, kd = jax.random.split(key)
  parts = []
  for k, cls, n in ((kg, general_class, n_general), (kd, dup_class, n_dup_class_distinct + 1)):
    idx = np.flatnonzero(labels == cls)
    if not 0 < n < len(idx):
      raise ValueError(
        f"class {cls} has {len(idx)} images; asked for {n} training images (keep some held out)."
      )
    perm = idx[np.asarray(jax.random.permutation(k, len(idx)))]
    parts.append((images[perm[:n]], images[perm[n:]]))
  (g_train, g_held), (d_train, d_held) = parts
  dup = d_train[0]
  x = np.concatenate([g_train, d_train[1:], np.repeat(dup[None], copies, 0)])
  y = np.concatenate([np.zeros(len(g_train)), np.ones(len(d_train) - 1 + copies)]).astype(np.int32)
  unique = np.concatenate([g_train, d_train])
  return DuplicatedDigits(x, y, unique, dup, (g_held, d_held))


# ---------------------------------------------------------------------------
# Training data from where users keep it: array files, image folders, TFDS, a function; and the
# recipe a checkpoint stores to rebuild (and verify) its training set.

#: Image files a folder source reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Values a :func:`recipe` stores inline (when the data has no source to re-read).
MAX_INLINE = 1 << 14


def fingerprint(x) -> dict:
  """Shape, dtype and SHA-256 of an array's bytes (C order): the identity of a data set.

  Args:
    x: array-like.

  Returns:
    dict with ``shape``, ``dtype`` and ``sha256``.
  """
  arr = np.ascontiguousarray(np.asarray(x))
  return {
    "shape": list(arr.shape),
    "dtype": str(arr.dtype),
    "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
  }


def to_range(x: np.ndarray, max_value: float, value_range=(-1.0, 1.0)) -> np.ndarray:
  """Scale values from ``[0, max_value]`` to ``[lo, hi]``: ``lo + (hi − lo) x / max_value``.

  ``(−1, 1)`` is exactly :func:`to_unit_range` (bit for bit, so hashes of the experiments' data
  sets are reproduced).

  Args:
    x: values.
    max_value: the largest raw value (255 for bytes).
    value_range: ``(lo, hi)``, ``lo < hi``.

  Returns:
    float32 numpy array.

  Raises:
    ValueError: if ``value_range`` is not an increasing pair of finite numbers.
  """
  lo, hi = _check_range(value_range)
  if (lo, hi) == (-1.0, 1.0):
    return to_unit_range(x, max_value)
  return (lo + (hi - lo) * np.asarray(x, np.float32) / max_value).astype(np.float32)


def _check_range(value_range):
  try:
    lo, hi = (float(v) for v in value_range)
  except (TypeError, ValueError) as err:
    raise ValueError(f"`value_range` must be a pair (lo, hi); got {value_range!r}.") from err
  if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
    raise ValueError(f"`value_range` must be finite with lo < hi; got {value_range!r}.")
  return lo, hi


def _scaled(arr: np.ndarray, value_range, what: str) -> np.ndarray:
  """Unsigned integers (and bools) scaled from ``[0, max]`` to ``value_range``; floats kept."""
  arr = np.asarray(arr)
  kind = arr.dtype.kind
  if kind == "b":
    return to_range(arr.astype(np.uint8), 1.0, value_range)
  if kind == "u":
    return to_range(arr, float(np.iinfo(arr.dtype).max), value_range)
  if kind == "f":
    out = np.asarray(arr, np.float32 if arr.dtype.itemsize <= 4 else arr.dtype)
    if not np.all(np.isfinite(out)):
      raise ValueError(f"{what} holds NaN or inf.")
    return out
  raise ValueError(f"{what} must hold floats or unsigned integers (pixels); got dtype {arr.dtype}.")


def _points(arr: np.ndarray, what: str) -> np.ndarray:
  if arr.ndim < 2 or arr.shape[0] < 1:
    raise ValueError(f"{what} must be (N, ...) with N >= 1 points; got shape {arr.shape}.")
  return arr


def _load_file(path: str, key: str, value_range) -> np.ndarray:
  what = f"`source` {path!r}"
  if path.endswith(".npz"):
    with np.load(path) as z:
      names = list(z.files)
      if not key:
        key = "train" if "train" in names else (names[0] if len(names) == 1 else "")
      if key not in names:
        raise ValueError(
          f"{what} holds arrays {names}; name one as {path}:NAME (or store it as 'train')."
        )
      arr = z[key]
    what = f"`source` {path}:{key}"
  else:
    arr = np.load(path, allow_pickle=False)
  return _points(_scaled(arr, value_range, what), what)


def _load_folder(path: str, value_range, max_examples) -> np.ndarray:
  from PIL import Image  # lazy: only image folders need Pillow (matplotlib ships it)

  files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise ValueError(f"`source` folder {path!r} holds no {'/'.join(IMAGE_SUFFIXES)} images.")
  files = files[:max_examples] if max_examples else files
  images, first = [], None
  for name in files:
    with Image.open(os.path.join(path, name)) as im:
      if im.mode in ("1", "P"):
        im = im.convert("L" if im.mode == "1" else "RGB")
      if im.mode not in ("L", "RGB"):
        raise ValueError(
          f"image {name!r} in `source` folder {path!r} has mode {im.mode!r}; use grey (L) or "
          "RGB images (drop the alpha channel)."
        )
      arr = np.asarray(im)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if first is None:
      first = (name, arr.shape, arr.dtype)
    elif (arr.shape, arr.dtype) != first[1:]:
      raise ValueError(
        f"the images of `source` folder {path!r} differ in size or channels: {first[0]!r} is "
        f"{first[1]} {first[2]}, {name!r} is {arr.shape} {arr.dtype} (H, W, C); resize them "
        "to one size and one colour mode."
      )
    images.append(arr)
  return _scaled(np.stack(images), value_range, f"`source` folder {path!r}")


def _load_tfds_images(name: str, split: str, value_range, max_examples, batch_size=1024):
  import tensorflow_datasets as tfds  # lazy: the core library works without TFDS

  source = tfds.data_source(name, split=split)
  n = len(source) if not max_examples else min(int(max_examples), len(source))
  if n < 1:
    raise ValueError(f"`source` tfds:{name}:{split} is empty.")
  images = []
  for start in range(0, n, batch_size):
    batch = [source[i] for i in range(start, min(n, start + batch_size))]
    if "image" not in batch[0]:
      raise ValueError(
        f"`source` tfds:{name}:{split} has no 'image' feature (features {sorted(batch[0])})."
      )
    images.append(np.stack([np.asarray(ex["image"]) for ex in batch]))
  return _scaled(np.concatenate(images), value_range, f"`source` tfds:{name}:{split}")


def import_object(spec: str, what: str):
  """``getattr(import_module(MODULE), NAME)`` of ``spec = "MODULE:NAME"`` (one home for both the
  data sources and the audit's model factories).

  Args:
    spec: ``"MODULE:NAME"``.
    what: the setting's name, for the error message (e.g. ``"source"``).

  Returns:
    the object.

  Raises:
    ValueError: naming ``what`` when ``spec`` is malformed or the module or the name is missing.
  """
  module_name, sep, name = str(spec).partition(":")
  if not sep or not module_name or not name:
    raise ValueError(f"`{what}` must be MODULE:FUNCTION; got {spec!r}.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as err:
    raise ValueError(f"`{what}` {spec!r}: cannot import {module_name!r} ({err}).") from err
  if not hasattr(module, name):
    raise ValueError(f"`{what}` {spec!r}: module {module_name!r} has no function {name!r}.")
  return getattr(module, name)


def _load_function(spec: str, value_range) -> np.ndarray:
  fn = import_object(spec, "source")
  if not callable(fn):
    raise ValueError(f"`source` {spec!r}: {fn!r} is not a function.")
  out = fn()
  if isinstance(out, tuple | list | dict):
    raise ValueError(f"`source` {spec!r} must return one array (N, ...); got {type(out).__name__}.")
  return _points(_scaled(np.asarray(out), value_range, f"`source` {spec!r}"), f"`source` {spec!r}")


def load_source(
  source: str, *, value_range=(-1.0, 1.0), max_examples: int | None = None
) -> np.ndarray:
  """Load a data set from where users keep it, as float32 points ``(N, *shape)``.

  ``source`` is one of (checked in this order):

  - ``PATH.npy``, ``PATH.npz`` or ``PATH.npz:NAME``: an array ``(N, ...)`` (an ``.npz`` with one
    array, or the one called ``train``, unless ``NAME`` picks one);
  - a folder of PNG/JPEG images (sorted by file name; grey → ``(H, W, 1)``, colour →
    ``(H, W, 3)``; all of one size and mode);
  - ``tfds:NAME`` or ``tfds:NAME:SPLIT`` (default split ``train``): the ``image`` feature through
    ``tfds.data_source`` (the data must be prepared: no download here);
  - ``digits``: scikit-learn's bundled 8×8 digits ``(1797, 8, 8, 1)``;
  - ``MODULE:FUNCTION``: ``FUNCTION()`` of an importable module, returning one array ``(N, ...)``.

  Unsigned-integer values (pixels; bools) are scaled from ``[0, max]`` to ``value_range``
  (:func:`to_range`; ``[0, 255]`` for bytes); float values are used as they are.

  Args:
    source: the specification above.
    value_range: the model's data range ``(lo, hi)`` that pixels are mapped to.
    max_examples: keep the first ``max_examples`` points (``None`` or 0: all).

  Returns:
    float32 (or float64 for float64 arrays) numpy array ``(N, *shape)``.

  Raises:
    ValueError: naming ``source``: a missing file or folder, an unreadable format, images of
      mixed sizes or colour modes, an array that is not ``(N, ...)`` or holds NaN/inf, an
      unknown module or function.
  """
  if not isinstance(source, str) or not source:
    raise ValueError(f"`source` must be a non-empty string; got {source!r}.")
  _check_range(value_range)
  if max_examples is not None and max_examples < 0:
    raise ValueError(f"`max_examples` must be >= 0; got {max_examples}.")
  path, key = source, ""
  if ".npz:" in source:
    path, _, key = source.rpartition(":")
  if os.path.isdir(path):
    return _load_folder(path, value_range, max_examples)
  if os.path.isfile(path):
    if not path.endswith((".npy", ".npz")):
      raise ValueError(
        f"`source` file {path!r} must be .npy or .npz (or a folder of {IMAGE_SUFFIXES} images)."
      )
    x = _load_file(path, key, value_range)
  elif source.startswith("tfds:"):
    parts = source.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
      raise ValueError(f"`source` must be tfds:NAME or tfds:NAME:SPLIT; got {source!r}.")
    return _load_tfds_images(
      parts[1], parts[2] if len(parts) == 3 else "train", value_range, max_examples
    )
  elif source == "digits":
    from sklearn import datasets

    x = to_range(datasets.load_digits().images, 16.0, value_range)[..., None]
  elif ":" in source and "/" not in source and not source.endswith((".npy", ".npz")):
    x = _load_function(source, value_range)
  else:
    raise ValueError(
      f"`source` {source!r} is not an existing file or folder, tfds:NAME[:SPLIT], 'digits' or "
      "MODULE:FUNCTION."
    )
  return x[:max_examples] if max_examples else x


def locate(rows, source: str, *, value_range=(-1.0, 1.0), max_examples: int | None = None):
  """Indices ``i_b`` with ``load_source(source)[i_b] == rows[b]`` bit for bit.

  Reads the source in growing prefixes (4096 points, then doubling) so that a subset of a large
  TFDS split costs only the prefix that holds it.

  Args:
    rows: ``(B, ...)`` points taken from the source (any shape with ``B·prod(shape)`` matching).
    source: a :func:`load_source` specification.
    value_range: as in :func:`load_source`.
    max_examples: read at most this many points.

  Returns:
    int numpy array ``(B,)``.

  Raises:
    ValueError: if a row is not in the source.
  """
  flat_rows = np.asarray(rows).reshape(len(rows), -1)
  want: dict = {}
  for b, r in enumerate(flat_rows):
    want.setdefault(np.ascontiguousarray(r).tobytes(), []).append(b)
  found = np.full(len(flat_rows), -1, np.int64)
  n = 4096 if not max_examples else min(4096, int(max_examples))
  while True:
    pool = load_source(source, value_range=value_range, max_examples=n)
    flat = pool.reshape(len(pool), -1).astype(flat_rows.dtype, copy=False)
    for i, r in enumerate(flat):
      for b in want.pop(np.ascontiguousarray(r).tobytes(), ()):
        found[b] = i
    if not want:
      return found
    if len(pool) < n or (max_examples and n >= max_examples):
      raise ValueError(
        f"{int(np.sum(found < 0))} of the {len(found)} rows are not in `source` {source!r}."
      )
    n = 2 * n if not max_examples else min(2 * n, int(max_examples))


def recipe(
  train,
  source: str | None = None,
  held_out=None,
  held_out_source: str | None = None,
  *,
  value_range=(-1.0, 1.0),
) -> dict:
  """How to rebuild ``train`` (and ``held_out``): the JSON a checkpoint stores beside its state.

  With a ``source`` the points are located in it (:func:`locate`) and stored as indices; without
  one they are stored inline (at most :data:`MAX_INLINE` values). Each set carries its
  :func:`fingerprint`, so :func:`from_recipe` verifies what it rebuilds.

  Args:
    train: training points ``(N, ...)``.
    source: the :func:`load_source` specification they were taken from (``None``: inline).
    held_out: held-out points ``(M, ...)`` or ``None``.
    held_out_source: their source (default: ``source``).
    value_range: the range the source was loaded with.

  Returns:
    dict ``{"train": {...}, "held_out": {...} | None}``; each part holds ``source`` and
    ``indices`` (or ``values``), ``point_shape`` and ``fingerprint``.

  Raises:
    ValueError: when inline data exceeds :data:`MAX_INLINE` values, or a row is not in its source.
  """

  def part(x, src):
    x = np.asarray(x)
    out = {"fingerprint": fingerprint(x), "value_range": [float(v) for v in value_range]}
    if src is None:
      if x.size > MAX_INLINE:
        raise ValueError(
          f"{x.size} values are too many to store inline (max {MAX_INLINE}); pass `source`."
        )
      return dict(out, source="inline", values=x.tolist())
    return dict(out, source=src, indices=locate(x, src, value_range=value_range).tolist())

  held_src = source if held_out_source is None else held_out_source
  return {
    "train": part(train, source),
    "held_out": None if held_out is None else part(held_out, held_src),
  }


def from_recipe(rec: dict):
  """``(train, held_out)`` rebuilt from a :func:`recipe`, each checked against its fingerprint.

  Args:
    rec: the dict :func:`recipe` returned (e.g. a checkpoint's ``metadata["data"]``).

  Returns:
    ``(train, held_out or None)`` numpy arrays of the recorded shapes and dtypes.

  Raises:
    ValueError: if the recipe is malformed or a rebuilt set differs from its fingerprint.
  """

  def part(p, what):
    if p is None:
      return None
    if not isinstance(p, dict) or "fingerprint" not in p or "source" not in p:
      raise ValueError(f"the data recipe's {what!r} entry is malformed: {str(p)[:200]}.")
    fp = p["fingerprint"]
    if p["source"] == "inline":
      x = np.asarray(p["values"], dtype=fp["dtype"])
    else:
      idx = np.asarray(p["indices"], np.int64)
      pool = load_source(p["source"], value_range=p["value_range"], max_examples=int(idx.max()) + 1)
      x = pool[idx].astype(fp["dtype"], copy=False)
    x = x.reshape(fp["shape"])
    if fingerprint(x) != fp:
      raise ValueError(
        f"the {what} data rebuilt from {p['source']!r} differs from the hash stored with it "
        "(the source changed since training)."
      )
    return x

  if not isinstance(rec, dict) or "train" not in rec:
    raise ValueError(f"a data recipe must be a dict with 'train'; got {str(rec)[:200]}.")
  return part(rec["train"], "train"), part(rec.get("held_out"), "held_out")
