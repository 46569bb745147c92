"""Noise regimes of the empirical denoiser: calm ends and the wild middle.

Everything is in the variance-exploding (VE) view ``y = ψ x + σ z`` with ``z ~ N(0, I)`` and,
unless stated, ``ψ = 1``. For a training set ``{x_i}_{i=1..n} ⊂ R^d`` the noised empirical
distribution is the mixture ``p̂_σ(y) = (1/n) Σ_i N(y; ψ x_i, σ² I)``, whose posterior over the
source point is

    w_i(y, σ) = softmax_i(−||y − ψ x_i||² / (2σ²)),

and whose optimal (MMSE) denoiser and score are

    D*_σ(y) = E[x | y] = Σ_i w_i x_i,        ∇_y log p̂_σ(y) = (ψ D*_σ(y) − y) / σ².

A model trained to optimality on the training set reproduces ``D*`` and hence the training set
(memorisation). The noise axis splits into three regimes:

* small σ — *coverage* is poor: noised held-out points ``q + σz`` do not land in the Gaussian
  shells ``S_σ(x_i) = {σ r_in ≤ ||y − x_i|| ≤ σ r_out}`` that carry (≥ 1 − 2e^{−c} of) the
  noised training mass, so the training loss does not constrain the model where generation
  happens;
* large σ — the posterior is *spread* (small max weight, large effective number
  ``N_eff = exp H``) and ``D*`` is close to the linear-Gaussian (Wiener) denoiser
  ``D_lin(y) = μ̂ + Σ̂(Σ̂ + σ²I)⁻¹(y − μ̂)``;
* medium σ — the *danger zone*: coverage is high and the posterior is still concentrated, so
  the training loss pulls the model towards ``D*``.

This module computes those curves from the denoisers of :mod:`memjax.denoisers` (the empirical
posterior, chunked), rough boundaries and a per-σ profile of how close a trained model's
denoiser is to ``D*``. The VE probability-flow sampler is :func:`memjax.sampling.sample_pf`; the
energy distance is :func:`memjax.metrics.energy_distance`.

References:
  "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
  arXiv:2602.17846.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, denoisers, neighbours, paths

Denoiser = paths.Denoiser


# ---------------------------------------------------------------------------
# Curves over σ: concentration and linearity gap.


class Concentration(NamedTuple):
  """Per-σ means over noised training points ``y = x + σz`` (each ``(S,)``).

  Attributes:
    sigmas: the noise levels.
    max_weight: ``W_σ = E max_i w_i``.
    entropy: ``E H``, ``H = −Σ_i w_i log w_i``.
    n_eff: ``E exp H``.
  """

  sigmas: jax.Array
  max_weight: jax.Array  # W_σ = E max_i w_i
  entropy: jax.Array  # E H
  n_eff: jax.Array  # E exp H


def _noised_points(key, points, num_noise):
  z = jax.random.normal(key, (num_noise,) + points.shape, points.dtype)
  base = jnp.broadcast_to(points[None], z.shape)
  return base.reshape(-1, points.shape[1]), z.reshape(-1, points.shape[1])


def _check_sigmas(sigmas):
  sigmas = jnp.atleast_1d(jnp.asarray(sigmas))
  _checks.check_ndim("sigmas", sigmas, 1, "(S,)")
  _checks.check_positive("sigmas", sigmas)
  return sigmas


def _optimal_and_linear(key, train, sigmas, points, num_noise, chunks):
  """Per σ: ``(σ, y, D*_σ(y), D_lin(y), lg)`` at ``y = p + σz`` (the same ``z`` for every σ)."""
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  lg = denoisers.fit_linear_gaussian(train)
  pts = train if points is None else jnp.asarray(points, train.dtype)
  base, z = _noised_points(key, pts, num_noise)
  for s in sigmas:
    y = base + s * z
    dstar = denoisers.posterior(train, y, s, **chunks).denoiser
    yield s, y, dstar, denoisers.linear_denoiser(lg, y, s), lg


def concentration(
  key: jax.Array, train: jax.Array, sigmas, *, num_noise: int = 4, **chunks
) -> Concentration:
  """Posterior concentration ``W_σ = E_{x∈train, z} max_i w_i(x + σz, σ)``, entropy and ``N_eff``.

  The same noise draws ``z`` are reused for every σ (common random numbers), so curves are smooth
  in σ. Cost ``S·num_noise·N²``.

  Args:
    key: PRNG key of the noise draws.
    train: training points ``(N, d)``.
    sigmas: noise levels ``(S,)``, positive.
    num_noise: noise draws per training point.
    **chunks: chunk sizes of :func:`memjax.denoisers.posterior`.

  Returns:
    :class:`Concentration`.

  Raises:
    ValueError: if ``sigmas`` is not 1-D and positive, or ``train`` is invalid.

  References:
    "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
    arXiv:2602.17846.
  """
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  base, z = _noised_points(key, train, num_noise)
  rows = []
  for s in sigmas:
    post = denoisers.posterior(train, base + s * z, s, **chunks)
    rows.append((jnp.mean(post.max_weight), jnp.mean(post.entropy), jnp.mean(post.n_eff)))
  w, h, ne = (jnp.stack(r) for r in zip(*rows))
  return Concentration(sigmas, w, h, ne)


def linearity_gap(
  key: jax.Array, train: jax.Array, sigmas, *, points=None, num_noise: int = 4, **chunks
) -> jax.Array:
  """Linearity gap ``ρ(σ) = E||D*_σ(y) − D_lin(y)|| / E||D*_σ(y) − μ̂||`` at ``y = p + σz``.

  For σ ≫ the nearest-neighbour scale, ``D* = μ̂ + Σ̂(y − μ̂)/σ² + O(σ⁻²)`` and ``D_lin`` agrees to
  that order, so ``ρ = O(1/σ) → 0``.

  Args:
    key: PRNG key of the noise draws.
    train: training points ``(N, d)``.
    sigmas: noise levels ``(S,)``, positive.
    points: clean points ``p`` (default: the training points).
    num_noise: noise draws per point.
    **chunks: chunk sizes of :func:`memjax.denoisers.posterior`.

  Returns:
    ``(S,)``.

  Raises:
    ValueError: if ``sigmas`` is not 1-D and positive.
  """
  out = []
  for _, _, dstar, dlin, lg in _optimal_and_linear(key, train, sigmas, points, num_noise, chunks):
    num = jnp.mean(jnp.linalg.norm(dstar - dlin, axis=1))
    out.append(num / jnp.mean(jnp.linalg.norm(dstar - lg.mean[None, :], axis=1)))
  return jnp.stack(out)


# ---------------------------------------------------------------------------
# Gaussian-shell coverage with the cheap σ sweep.


def shell_radii(d: int, c: float = 5.0):
  """``(r_in, r_out)`` with ``r_in = √max(d − 2√(cd), 0)``, ``r_out = √(d + 2√(cd) + 2c)``.

  Laurent–Massart χ² tail bounds give ``P(r_in ≤ ||z|| ≤ r_out) ≥ 1 − 2e^{−c}`` for
  ``z ~ N(0, I_d)``, so the shell ``S_σ(x)`` of radii ``σ r_in, σ r_out`` around ``x`` holds at
  least that much of ``N(x, σ²I)``. ``r_in`` is clipped at 0 for ``d < 4c``.

  Args:
    d: dimension ``d ≥ 1``.
    c: tail parameter ``c > 0``.

  Returns:
    ``(r_in, r_out)`` as floats.

  Raises:
    ValueError: if ``d < 1`` or ``c ≤ 0``.

  References:
    Laurent and Massart, "Adaptive estimation of a quadratic functional by model selection",
    Ann. Statist. 28 (2000).
  """
  if d < 1:
    raise ValueError(f"`d` must be >= 1; got {d}.")
  _checks.check_positive("c", c)
  root = 2.0 * np.sqrt(c * d)
  return float(np.sqrt(max(d - root, 0.0))), float(np.sqrt(d + root + 2.0 * c))


class ShellSweep(NamedTuple):
  """Precomputed terms of ``||q + σz − x_i||² = A + 2σ(b − B) + σ²c`` for the cheap σ sweep.

  Attributes:
    sq_dist: ``(Q, N)`` ``A = ||q − x_i||²``.
    zq: ``(Q,)`` ``b = ⟨z, q⟩``.
    zx: ``(Q, N)`` ``B = ⟨z, x_i⟩``.
    zz: ``(Q,)`` ``c = ||z||²``.
  """

  sq_dist: jax.Array  # (Q, N) A = ||q − x_i||²
  zq: jax.Array  # (Q,)   b = ⟨z, q⟩
  zx: jax.Array  # (Q, N) B = ⟨z, x_i⟩
  zz: jax.Array  # (Q,)   c = ||z||²


def shell_sweep(queries: jax.Array, z: jax.Array, train: jax.Array) -> ShellSweep:
  """Precompute :class:`ShellSweep` once (``O(QNd)``); each σ then costs ``O(QN)``.

  Args:
    queries: points ``q`` ``(Q, d)``.
    z: noise ``(Q, d)``.
    train: training points ``(N, d)``.

  Returns:
    :class:`ShellSweep`.

  Raises:
    ValueError: on shape mismatches or NaN/inf points.
  """
  queries, z, train = jnp.asarray(queries), jnp.asarray(z), jnp.asarray(train)
  _checks.check_point_sets("train", train, "queries", queries)
  if z.shape != queries.shape:
    raise ValueError(f"`z` must have the shape of `queries` {queries.shape}; got {z.shape}.")
  diff = queries[:, None, :] - train[None, :, :]
  return ShellSweep(jnp.sum(diff**2, -1), jnp.sum(z * queries, 1), z @ train.T, jnp.sum(z**2, 1))


def sweep_sq_distances(sw: ShellSweep, sigma) -> jax.Array:
  """``||q + σz − x_i||² = A + 2σ(b − B) + σ²c``, clipped at 0 against rounding.

  Args:
    sw: :class:`ShellSweep`.
    sigma: noise level (scalar).

  Returns:
    ``(Q, N)`` squared distances.
  """
  return jnp.maximum(
    sw.sq_dist + 2.0 * sigma * (sw.zq[:, None] - sw.zx) + sigma**2 * sw.zz[:, None], 0.0
  )


class Coverage(NamedTuple):
  """Per-σ shell coverage of noised queries (each ``(S,)``).

  Attributes:
    sigmas: the noise levels.
    coverage: ``C_σ = P(q + σz ∈ ∪_i S_σ(x_i))``.
    multiplicity: ``E #{i : q + σz ∈ S_σ(x_i)}`` (above 1: overlapping shells).
  """

  sigmas: jax.Array
  coverage: jax.Array  # C_σ = P(q + σz ∈ ∪_i S_σ(x_i))
  multiplicity: jax.Array  # E #{i : q + σz ∈ S_σ(x_i)} (> 1: overlapping shells)


@jax.jit
def _coverage_curve(sw, sigmas, r_in, r_out):
  def one(s):
    d2 = sweep_sq_distances(sw, s)
    inside = (d2 >= (s * r_in) ** 2) & (d2 <= (s * r_out) ** 2)
    return (
      jnp.mean(jnp.any(inside, 1).astype(sigmas.dtype)),
      jnp.mean(jnp.sum(inside, 1).astype(sigmas.dtype)),
    )

  return jax.lax.map(one, sigmas)


def shell_coverage(
  key: jax.Array,
  train: jax.Array,
  queries: jax.Array,
  sigmas,
  *,
  c: float = 5.0,
  num_noise: int = 4,
) -> Coverage:
  """Gaussian-shell coverage ``C_σ = P_{q, z}(q + σz ∈ ∪_i S_σ(x_i))`` by Monte Carlo.

  Each held-out query gets ``num_noise`` noise draws, shared across σ (:func:`shell_sweep`).
  Memory ``O(num_noise·Q·N)``.

  Args:
    key: PRNG key of the noise draws.
    train: training points ``(N, d)``.
    queries: held-out points ``(Q, d)`` from the data distribution.
    sigmas: noise levels ``(S,)``, positive.
    c: shell tail parameter (:func:`shell_radii`).
    num_noise: noise draws per query.

  Returns:
    :class:`Coverage`.

  Raises:
    ValueError: on shape mismatches, NaN/inf points or invalid ``sigmas``.

  References:
    "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
    arXiv:2602.17846.
  """
  train, queries = jnp.asarray(train), jnp.asarray(queries)
  _checks.check_point_sets("train", train, "queries", queries)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  base, z = _noised_points(key, queries, num_noise)
  r_in, r_out = shell_radii(train.shape[1], c)
  cov, mult = _coverage_curve(shell_sweep(base, z, train), sigmas, r_in, r_out)
  return Coverage(sigmas, cov, mult)


def coverage_rule(nn_dist: jax.Array, sigmas, d: int, c: float = 5.0) -> jax.Array:
  """Nearest-neighbour rule for coverage, ``P_q(Δ_NN(q) ≤ σ√(r_out² − d))``.

  ``q + σz`` reaches the shell of ``x`` when ``||q − x||² + σ²||z||² ≲ σ² r_out²`` with
  ``||z||² ≈ d``, i.e. ``Δ ≤ σ√(2√(cd) + 2c) ≈ σ(4cd)^{1/4}`` for ``d ≫ c``.

  Args:
    nn_dist: nearest-training-point distances ``Δ_NN`` of held-out points ``(Q,)``.
    sigmas: noise levels ``(S,)``.
    d: dimension.
    c: shell tail parameter.

  Returns:
    ``(S,)``.
  """
  _, r_out = shell_radii(d, c)
  reach = jnp.sqrt(r_out**2 - d)
  nn = jnp.asarray(nn_dist)
  return jnp.mean(nn[None, :] <= reach * _check_sigmas(sigmas)[:, None].astype(nn.dtype), axis=1)


# ---------------------------------------------------------------------------
# Regime boundaries.


def rough_boundaries(train: jax.Array, held_out: jax.Array, c: float = 5.0) -> dict:
  """Closed-form boundary guesses from nearest-neighbour distances (for placing a σ grid).

  ``Δ_ho`` = median distance of a held-out point to its nearest training point; ``Δ_tt`` = median
  leave-one-out nearest-neighbour distance inside the training set. Coverage onset
  ``σ_cov = Δ_ho/(4cd)^{1/4}`` (``σ_cov_shell = Δ_ho/√(2√(cd)+2c)``, its low-d version);
  concentration fades at ``σ_conc = Δ_tt/(2√ln N)``, where the nearest competitor's log-weight gap
  ``Δ²/(2σ²)`` matches the ``ln N`` others (up to a factor 2). Always compute the curves too.

  Args:
    train: training points ``(N, d)``, ``N ≥ 3``.
    held_out: held-out points ``(M, d)``.
    c: shell tail parameter.

  Returns:
    dict with ``delta_nn_heldout``, ``delta_nn_train``, ``sigma_cov``, ``sigma_cov_shell`` and
    ``sigma_conc``.

  Raises:
    ValueError: on shape mismatches, NaN/inf points or fewer than 3 training points.
  """
  train, held_out = jnp.asarray(train), jnp.asarray(held_out)
  _checks.check_point_sets("train", train, "held_out", held_out)
  n, d = train.shape
  if n < 3:
    raise ValueError(f"`train` must hold at least 3 points; got {n}.")
  d_ho = float(np.median(np.asarray(neighbours.nearest_two(held_out, train).d1)))
  d_tt = float(np.median(np.asarray(neighbours.nearest_two(train, train).d2)))
  _, r_out = shell_radii(d, c)
  return {
    "delta_nn_heldout": d_ho,
    "delta_nn_train": d_tt,
    "sigma_cov": d_ho / (4 * c * d) ** 0.25,
    "sigma_cov_shell": d_ho / float(np.sqrt(r_out**2 - d)),
    "sigma_conc": d_tt / (2.0 * float(np.sqrt(np.log(n)))),
  }


def regime_boundaries(sigmas, coverage, concentration_w, threshold: float = 0.8) -> dict:
  """Boundaries read off the computed curves: ``σ_small``, ``σ_large`` and the danger zone.

  ``σ_small`` = smallest σ with ``C_σ ≥ threshold`` (coverage onset); ``σ_large`` = largest σ with
  ``W_σ ≥ threshold`` (concentration still high); the danger zone is every grid σ with both,
  ``[danger_lo, danger_hi]`` its range (NaN where absent).

  Args:
    sigmas: strictly increasing noise levels ``(S,)``.
    coverage: ``C_σ`` ``(S,)`` (:func:`shell_coverage`).
    concentration_w: ``W_σ`` ``(S,)`` (:func:`concentration`).
    threshold: the level both curves must reach.

  Returns:
    dict with ``sigma_small``, ``sigma_large``, ``danger_mask``, ``danger_lo``, ``danger_hi`` and
    ``threshold``.

  Raises:
    ValueError: if the three arrays differ in shape or ``sigmas`` is not strictly increasing.

  References:
    "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
    arXiv:2602.17846.
  """
  s, cov, w = (np.asarray(a, np.float64) for a in (sigmas, coverage, concentration_w))
  if s.ndim != 1 or cov.shape != s.shape or w.shape != s.shape:
    raise ValueError(
      f"`sigmas`, `coverage`, `concentration_w` must share one shape (S,); got "
      f"{s.shape}, {cov.shape}, {w.shape}."
    )
  if np.any(np.diff(s) <= 0):
    raise ValueError("`sigmas` must be strictly increasing.")
  first = lambda m: float(s[np.argmax(m)]) if m.any() else float("nan")
  last = lambda m: float(s[len(s) - 1 - np.argmax(m[::-1])]) if m.any() else float("nan")
  danger = (cov >= threshold) & (w >= threshold)
  return {
    "sigma_small": first(cov >= threshold),
    "sigma_large": last(w >= threshold),
    "danger_mask": danger.tolist(),
    "danger_lo": first(danger),
    "danger_hi": last(danger),
    "threshold": threshold,
  }


class Profile(NamedTuple):
  """Memorisation-by-noise-level profile of a model denoiser ``D_θ`` (each ``(S,)``).

  Attributes:
    sigmas: the noise levels.
    rel_dist: ``E||D_θ − D*|| / E||D* − D_lin||`` (≪ 1: behaves like the memorising optimum).
    alignment: ``E⟨D_θ − D_lin, D* − D_lin⟩ / E||D* − D_lin||²`` (1: ``D*``, 0: ``D_lin``).
    dist_model_opt: ``E||D_θ − D*||``.
    dist_opt_lin: ``E||D* − D_lin||``.
  """

  sigmas: jax.Array
  rel_dist: jax.Array  # E||D_θ − D*|| / E||D* − D_lin||  (≪ 1: behaves like the memorising optimum)
  alignment: jax.Array  # E⟨D_θ − D_lin, D* − D_lin⟩ / E||D* − D_lin||²  (1: D*, 0: D_lin)
  dist_model_opt: jax.Array  # E||D_θ − D*||
  dist_opt_lin: jax.Array  # E||D* − D_lin||


def denoiser_profile(
  key: jax.Array,
  denoiser: Denoiser,
  train: jax.Array,
  sigmas,
  *,
  points=None,
  num_noise: int = 2,
  **chunks,
) -> Profile:
  """Per σ, how close a trained model's denoiser is to the empirical optimum ``D*`` of ``train``.

  Queries are ``y = p + σz`` with ``p`` the training points (default) or ``points``. The distance
  to ``D*`` is measured in units of the distance between ``D*`` and the linear-Gaussian denoiser
  ``D_lin`` (what a generalising Gaussian model would do), so ``rel_dist ≈ 0`` flags the σ at which
  the model reproduces the memorising optimum; ``alignment`` is the projection coefficient of
  ``D_θ − D_lin`` on ``D* − D_lin``.

  Args:
    key: PRNG key of the noise draws.
    denoiser: the model as a :data:`memjax.paths.Denoiser` (e.g.
      :func:`memjax.denoisers.fm_denoiser`).
    train: training points ``(N, d)``.
    sigmas: noise levels ``(S,)``, positive.
    points: clean points ``p`` (default: the training points).
    num_noise: noise draws per point.
    **chunks: chunk sizes of :func:`memjax.denoisers.posterior`.

  Returns:
    :class:`Profile`.

  Raises:
    ValueError: if ``sigmas`` is not 1-D and positive.
  """
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  rows = []
  for s, y, dstar, dlin, _ in _optimal_and_linear(key, train, sigmas, points, num_noise, chunks):
    dmod = jnp.asarray(denoiser(y, s), train.dtype)
    ref = dstar - dlin
    d_mo = jnp.mean(jnp.linalg.norm(dmod - dstar, axis=1))
    d_ol = jnp.mean(jnp.linalg.norm(ref, axis=1))
    align = jnp.mean(jnp.sum((dmod - dlin) * ref, 1)) / jnp.mean(jnp.sum(ref**2, 1))
    rows.append((d_mo / d_ol, align, d_mo, d_ol))
  return Profile(sigmas, *(jnp.stack(r) for r in zip(*rows)))


# ---------------------------------------------------------------------------
# Deterministic VE probability-flow sampler with a σ window.


def sigma_grid(sigma_min: float, sigma_max: float, num_steps: int) -> np.ndarray:
  """Geometric grid ``σ_0 = σ_max > … > σ_K = σ_min`` with ``K = num_steps`` (for sampling).

  Args:
    sigma_min: the smallest level.
    sigma_max: the largest level.
    num_steps: ``K ≥ 1``.

  Returns:
    ``(K + 1,)`` numpy array, decreasing.

  Raises:
    ValueError: unless ``0 < sigma_min < sigma_max`` and ``num_steps ≥ 1``.
  """
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"need 0 < `sigma_min` < `sigma_max`; got {sigma_min}, {sigma_max}.")
  if num_steps < 1:
    raise ValueError(f"`num_steps` must be >= 1; got {num_steps}.")
  return np.geomspace(sigma_max, sigma_min, num_steps + 1)


def log_windows(sigma_min: float, sigma_max: float, num_windows: int) -> np.ndarray:
  """``num_windows`` adjacent windows ``[lo, hi]`` tiling ``[σ_min, σ_max]`` evenly in ``log σ``.

  Args:
    sigma_min: the lower end.
    sigma_max: the upper end.
    num_windows: ``W ≥ 1``.

  Returns:
    ``(W, 2)`` numpy array of ``[lo, hi]``, increasing.

  Raises:
    ValueError: unless ``0 < sigma_min < sigma_max`` and ``num_windows ≥ 1``.
  """
  edges = sigma_grid(sigma_min, sigma_max, num_windows)[::-1]
  return np.stack([edges[:-1], edges[1:]], 1)
