r"""Noise regimes of the empirical denoiser: calm ends and the wild middle (seed 004).

Everything is in the variance-exploding (VE) view ``y = ψ x + σ z`` with
``z ~ N(0, I)`` and, unless stated, ``ψ = 1``. For a training set
``{x_i}_{i=1..n} ⊂ R^d`` the noised empirical distribution is the mixture
``p̂_σ(y) = (1/n) Σ_i N(y; ψ x_i, σ² I)``, whose posterior over the source point is

    w_i(y, σ) = softmax_i(−||y − ψ x_i||² / (2σ²)),

and whose optimal (MMSE) denoiser and score are

    D*_σ(y) = E[x | y] = Σ_i w_i x_i,        ∇_y log p̂_σ(y) = (ψ D*_σ(y) − y) / σ².

A model trained to optimality on the training set reproduces ``D*`` and hence
the training set (memorisation). The noise axis splits into three regimes:

* small σ — *coverage* is poor: noised held-out points ``q + σz`` do not land
  in the Gaussian shells ``S_σ(x_i) = {σ r_in ≤ ||y − x_i|| ≤ σ r_out}`` that
  carry (≥ 1 − 2e^{−c} of) the noised training mass, so the training loss does
  not constrain the model where generation happens;
* large σ — the posterior is *spread* (small max weight, large effective
  number ``N_eff = exp H``) and ``D*`` is close to the linear-Gaussian (Wiener)
  denoiser ``D_lin(y) = μ̂ + Σ̂(Σ̂ + σ²I)⁻¹(y − μ̂)``;
* medium σ — the *danger zone*: coverage is high and the posterior is still
  concentrated, so the training loss pulls the model towards ``D*``.

This module computes those curves (chunked over the training set with a
running log-sum-exp, never materialising ``(Q, n)``), rough boundaries, a
deterministic VE probability-flow sampler whose denoiser can be swapped or
blended inside a σ window, and a per-σ profile of how close a trained model's
denoiser is to ``D*``.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, memorisation, paths

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]  # D(y (Q, d), σ scalar) -> x̂ (Q, d)


# ---------------------------------------------------------------------------
# Empirical posterior: chunked, stable log-sum-exp.


class Posterior(NamedTuple):
  """Posterior summaries of ``w_i(y, σ)`` for each query (leading axis ``Q``)."""

  denoiser: jax.Array    # (Q, d)  D*_σ(y) = Σ_i w_i x_i
  log_norm: jax.Array    # (Q,)    log Σ_i exp(−||y − ψ x_i||² / (2σ²))
  max_weight: jax.Array  # (Q,)    max_i w_i
  entropy: jax.Array     # (Q,)    H = −Σ_i w_i log w_i (nats)

  @property
  def n_eff(self) -> jax.Array:
    """Effective number of training points ``exp H`` (1 = fully concentrated, n = uniform)."""
    return jnp.exp(self.entropy)


def _block_logits(q, sig2, xb, xn, psi):
  # −||q − ψx||²/(2σ²) without the row constant −||q||²/(2σ²) (softmax is shift invariant).
  return (psi * (q @ xb.T) - 0.5 * psi**2 * xn[None, :]) / sig2[:, None]


def _posterior_block(q, sig2, blocks, psi):
  """Running log-sum-exp over training blocks for one query block ``q`` ``(B, d)``.

  Carry per query: running max logit ``m``, ``s = Σ e^{l−m}``, ``a = Σ e^{l−m} x_i``
  and ``e = Σ e^{l−m}(l − m)``; then ``H = log s − e/s`` and ``max w = 1/s``.
  """
  xs, xns, valids = blocks

  def update(carry, blk):
    m, s, a, e = carry
    xb, xn, valid = blk
    logits = jnp.where(valid[None, :], _block_logits(q, sig2, xb, xn, psi), -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    scale = jnp.exp(m - m_new)
    p = jnp.where(valid[None, :], jnp.exp(logits - m_new[:, None]), 0.0)
    lp = jnp.where(valid[None, :], (logits - m_new[:, None]) * p, 0.0)
    s_new = scale * s + jnp.sum(p, 1)
    a_new = scale[:, None] * a + p @ xb
    shift = jnp.where(s > 0, s * (m - m_new), 0.0)  # s = 0 only before the first block (m = −inf)
    e_new = scale * (e + shift) + jnp.sum(lp, 1)
    return (m_new, s_new, a_new, e_new), None

  first = jnp.full((q.shape[0],), -jnp.inf, q.dtype)
  zero = jnp.zeros((q.shape[0],), q.dtype)
  # The first training block is never padded, so the carry is finite after it.
  carry, _ = update((first, zero, jnp.zeros_like(q), zero), (xs[0], xns[0], valids[0]))
  (m, s, a, e), _ = jax.lax.scan(update, carry, (xs[1:], xns[1:], valids[1:]))
  log_norm = m + jnp.log(s) - 0.5 * jnp.sum(q**2, 1) / sig2
  return Posterior(a / s[:, None], log_norm, 1.0 / s, jnp.log(s) - e / s)


@functools.partial(jax.jit, static_argnames=("query_chunk", "train_chunk"))
def _posterior(train, y, sigma, psi, query_chunk, train_chunk):
  n, d = train.shape
  pad_t = (-n) % train_chunk
  xs = jnp.pad(train, ((0, pad_t), (0, 0))).reshape(-1, train_chunk, d)
  valid = (jnp.arange(n + pad_t) < n).reshape(-1, train_chunk)
  blocks = (xs, jnp.sum(xs**2, -1), valid)
  nq = y.shape[0]
  pad_q = (-nq) % query_chunk
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, y.dtype) ** 2, (nq,))
  yq = jnp.pad(y, ((0, pad_q), (0, 0))).reshape(-1, query_chunk, d)
  sq = jnp.pad(sig2, (0, pad_q), constant_values=1.0).reshape(-1, query_chunk)
  out = jax.lax.map(lambda qs: _posterior_block(qs[0], qs[1], blocks, psi), (yq, sq))
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:nq], out)


def _check_pair(train, y):
  _checks.check_ndim("train", train, 2, "(N, d)")
  _checks.check_ndim("y", y, 2, "(Q, d)")
  if train.shape[0] < 1:
    raise ValueError("`train` must hold at least one point.")
  _checks.check_last_dim("y", y, train.shape[1], "(Q, d)")
  _checks.check_finite("train", train)
  _checks.check_finite("y", y)


def _check_sigma(sigma, nq):
  if jnp.ndim(sigma) not in (0, 1) or (jnp.ndim(sigma) == 1 and jnp.shape(sigma)[0] != nq):
    raise ValueError(f"`sigma` must be a scalar or have shape ({nq},); got shape {jnp.shape(sigma)}.")
  _checks.check_positive("sigma", sigma)


def posterior(train: jax.Array, y: jax.Array, sigma, *, psi=1.0, query_chunk: int = 512,
              train_chunk: int = 1024) -> Posterior:
  """Posterior summaries of ``w_i(y,σ) = softmax_i(−||y − ψx_i||²/(2σ²))``, chunked.

  Args:
    train: training points ``(N, d)``.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or per query ``(Q,)``, > 0.
    psi: data scaling ψ (1 in the VE view).
    query_chunk, train_chunk: block sizes; peak memory ``O(query_chunk·(train_chunk + d))``.

  Returns:
    :class:`Posterior` with ``D*_σ(y)`` ``(Q, d)``, log normaliser, max weight and entropy ``(Q,)``.
  """
  train, y = jnp.asarray(train), jnp.asarray(y)
  _check_pair(train, y)
  _check_sigma(sigma, y.shape[0])
  for name, val in (("query_chunk", query_chunk), ("train_chunk", train_chunk)):
    if val < 1:
      raise ValueError(f"`{name}` must be >= 1; got {val}.")
  dtype = jnp.result_type(train, y)
  return _posterior(train.astype(dtype), y.astype(dtype), jnp.asarray(sigma, dtype), jnp.asarray(psi, dtype),
                    max(1, min(query_chunk, y.shape[0])), max(1, min(train_chunk, train.shape[0])))


def posterior_weights(train: jax.Array, y: jax.Array, sigma, *, psi=1.0) -> jax.Array:
  """Dense weights ``w_i(y,σ)`` of shape ``(Q, N)`` (small problems and tests only)."""
  train, y = jnp.asarray(train), jnp.asarray(y)
  _check_pair(train, y)
  _check_sigma(sigma, y.shape[0])
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, y.dtype) ** 2, (y.shape[0],))
  return jax.nn.softmax(_block_logits(y, sig2, train, jnp.sum(train**2, 1), psi), axis=1)


def empirical_denoiser(train: jax.Array, y: jax.Array, sigma, **kw) -> jax.Array:
  """Optimal denoiser of the training set, ``D*_σ(y) = Σ_i w_i(y,σ) x_i``; ``(Q, d)``.

  Keyword arguments (``psi``, chunk sizes) as in :func:`posterior`.
  """
  return posterior(train, y, sigma, **kw).denoiser


def empirical_score(train: jax.Array, y: jax.Array, sigma, *, psi=1.0, **kw) -> jax.Array:
  """Score of ``p̂_σ = (1/N) Σ_i N(ψx_i, σ²I)``: ``∇_y log p̂_σ(y) = (ψ D*_σ(y) − y)/σ²``.

  Returns shape ``(Q, d)``; keyword arguments as in :func:`posterior`.
  """
  den = posterior(train, y, sigma, psi=psi, **kw).denoiser
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, den.dtype) ** 2, (den.shape[0],))[:, None]
  return (psi * den - y) / sig2


# ---------------------------------------------------------------------------
# Linear-Gaussian (Wiener) denoiser.


class LinearGaussian(NamedTuple):
  """Gaussian fit ``N(μ̂, Σ̂)`` of the training set, ``Σ̂ = U diag(λ) Uᵀ`` (thin SVD, rank ≤ min(N, d))."""

  mean: jax.Array     # (d,)
  basis: jax.Array    # (d, k) orthonormal columns U
  eigvals: jax.Array  # (k,) λ = s²/N (the empirical measure's covariance, 1/N normalisation)


def fit_linear_gaussian(train: jax.Array) -> LinearGaussian:
  """Mean and covariance ``Σ̂ = (1/N) X_cᵀX_c`` of the empirical measure via the thin SVD of ``X_c``."""
  train = jnp.asarray(train)
  _checks.check_ndim("train", train, 2, "(N, d)")
  _checks.check_finite("train", train)
  mean = jnp.mean(train, 0)
  _, s, vt = jnp.linalg.svd(train - mean[None, :], full_matrices=False)
  return LinearGaussian(mean, vt.T, s**2 / train.shape[0])


def linear_denoiser(lg: LinearGaussian, y: jax.Array, sigma) -> jax.Array:
  """Wiener denoiser ``D_lin(y) = μ̂ + U diag(λ/(λ+σ²)) Uᵀ(y − μ̂)``; ``y`` ``(Q, d)`` → ``(Q, d)``.

  It is ``E[x | y]`` for ``x ~ N(μ̂, Σ̂)``, ``y = x + σz`` (directions outside
  ``span U`` have zero variance and are denoised to ``μ̂``).
  """
  y = jnp.asarray(y)
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, y.dtype) ** 2, y.shape[:1])[:, None]
  coef = (y - lg.mean[None, :]) @ lg.basis
  return lg.mean[None, :] + (coef * lg.eigvals[None, :] / (lg.eigvals[None, :] + sig2)) @ lg.basis.T


# ---------------------------------------------------------------------------
# Curves over σ: concentration and linearity gap.


class Concentration(NamedTuple):
  """Per-σ means over noised training points ``y = x + σz`` (each ``(S,)``)."""

  sigmas: jax.Array
  max_weight: jax.Array  # W_σ = E max_i w_i
  entropy: jax.Array     # E H
  n_eff: jax.Array       # E exp H


def _noised_points(key, points, num_noise):
  z = jax.random.normal(key, (num_noise,) + points.shape, points.dtype)
  base = jnp.broadcast_to(points[None], z.shape)
  return base.reshape(-1, points.shape[1]), z.reshape(-1, points.shape[1])


def _check_sigmas(sigmas):
  sigmas = jnp.atleast_1d(jnp.asarray(sigmas))
  _checks.check_ndim("sigmas", sigmas, 1, "(S,)")
  _checks.check_positive("sigmas", sigmas)
  return sigmas


def concentration(key: jax.Array, train: jax.Array, sigmas, *, num_noise: int = 4, **chunks) -> Concentration:
  """Posterior concentration ``W_σ = E_{x∈train, z} max_i w_i(x + σz, σ)``, mean entropy and ``N_eff``.

  The same noise draws ``z`` are reused for every σ (common random numbers),
  so curves are smooth in σ. ``sigmas`` ``(S,)``; cost ``S·num_noise·N²``.
  """
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  base, z = _noised_points(key, train, num_noise)
  rows = []
  for s in sigmas:
    post = posterior(train, base + s * z, s, **chunks)
    rows.append((jnp.mean(post.max_weight), jnp.mean(post.entropy), jnp.mean(post.n_eff)))
  w, h, ne = (jnp.stack(r) for r in zip(*rows))
  return Concentration(sigmas, w, h, ne)


def linearity_gap(key: jax.Array, train: jax.Array, sigmas, *, points=None, num_noise: int = 4,
                  **chunks) -> jax.Array:
  """``ρ(σ) = E||D*_σ(y) − D_lin(y)|| / E||D*_σ(y) − μ̂||`` at ``y = p + σz``; shape ``(S,)``.

  ``points`` default to the training points. For σ ≫ the nearest-neighbour
  scale, ``D* = μ̂ + Σ̂(y − μ̂)/σ² + O(σ⁻²)`` and ``D_lin`` agrees to that order,
  so ``ρ = O(1/σ) → 0``.
  """
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  lg = fit_linear_gaussian(train)
  base, z = _noised_points(key, train if points is None else jnp.asarray(points, train.dtype), num_noise)
  out = []
  for s in sigmas:
    y = base + s * z
    dstar = posterior(train, y, s, **chunks).denoiser
    num = jnp.mean(jnp.linalg.norm(dstar - linear_denoiser(lg, y, s), axis=1))
    out.append(num / jnp.mean(jnp.linalg.norm(dstar - lg.mean[None, :], axis=1)))
  return jnp.stack(out)


# ---------------------------------------------------------------------------
# Gaussian-shell coverage with the cheap σ sweep.


def shell_radii(d: int, c: float = 5.0):
  """``(r_in, r_out)`` with ``r_in = √max(d − 2√(cd), 0)``, ``r_out = √(d + 2√(cd) + 2c)``.

  Laurent–Massart χ² tail bounds give ``P(r_in ≤ ||z|| ≤ r_out) ≥ 1 − 2e^{−c}`` for
  ``z ~ N(0, I_d)``, so the shell ``S_σ(x)`` of radii ``σ r_in, σ r_out`` around
  ``x`` holds at least that much of ``N(x, σ²I)``. ``r_in`` is clipped at 0 for ``d < 4c``.
  """
  if d < 1:
    raise ValueError(f"`d` must be >= 1; got {d}.")
  _checks.check_positive("c", c)
  root = 2.0 * np.sqrt(c * d)
  return float(np.sqrt(max(d - root, 0.0))), float(np.sqrt(d + root + 2.0 * c))


class ShellSweep(NamedTuple):
  """Precomputed terms of ``||q + σz − x_i||² = A + 2σ(b − B) + σ²c`` for the cheap σ sweep."""

  sq_dist: jax.Array  # (Q, N) A = ||q − x_i||²
  zq: jax.Array       # (Q,)   b = ⟨z, q⟩
  zx: jax.Array       # (Q, N) B = ⟨z, x_i⟩
  zz: jax.Array       # (Q,)   c = ||z||²


def shell_sweep(queries: jax.Array, z: jax.Array, train: jax.Array) -> ShellSweep:
  """Precompute :class:`ShellSweep` once (``O(QNd)``); each σ then costs ``O(QN)``."""
  queries, z, train = jnp.asarray(queries), jnp.asarray(z), jnp.asarray(train)
  _check_pair(train, queries)
  if z.shape != queries.shape:
    raise ValueError(f"`z` must have the shape of `queries` {queries.shape}; got {z.shape}.")
  diff = queries[:, None, :] - train[None, :, :]
  return ShellSweep(jnp.sum(diff**2, -1), jnp.sum(z * queries, 1), z @ train.T, jnp.sum(z**2, 1))


def sweep_sq_distances(sw: ShellSweep, sigma) -> jax.Array:
  """``||q + σz − x_i||² = A + 2σ(b − B) + σ²c``, shape ``(Q, N)``; clipped at 0 against rounding."""
  return jnp.maximum(sw.sq_dist + 2.0 * sigma * (sw.zq[:, None] - sw.zx) + sigma**2 * sw.zz[:, None], 0.0)


class Coverage(NamedTuple):
  """Per-σ shell coverage of noised queries (each ``(S,)``)."""

  sigmas: jax.Array
  coverage: jax.Array      # C_σ = P(q + σz ∈ ∪_i S_σ(x_i))
  multiplicity: jax.Array  # E #{i : q + σz ∈ S_σ(x_i)} (> 1: overlapping shells)


@jax.jit
def _coverage_curve(sw, sigmas, r_in, r_out):
  def one(s):
    d2 = sweep_sq_distances(sw, s)
    inside = (d2 >= (s * r_in) ** 2) & (d2 <= (s * r_out) ** 2)
    return (jnp.mean(jnp.any(inside, 1).astype(sigmas.dtype)),
            jnp.mean(jnp.sum(inside, 1).astype(sigmas.dtype)))
  return jax.lax.map(one, sigmas)


def shell_coverage(key: jax.Array, train: jax.Array, queries: jax.Array, sigmas, *, c: float = 5.0,
                   num_noise: int = 4) -> Coverage:
  """Gaussian-shell coverage ``C_σ = P_{q, z}(q + σz ∈ ∪_i S_σ(x_i))`` by Monte Carlo.

  ``queries`` ``(Q, d)`` are held-out points from the data distribution; each
  gets ``num_noise`` noise draws, shared across σ. Memory ``O(num_noise·Q·N)``.
  """
  train, queries = jnp.asarray(train), jnp.asarray(queries)
  _check_pair(train, queries)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  base, z = _noised_points(key, queries, num_noise)
  r_in, r_out = shell_radii(train.shape[1], c)
  cov, mult = _coverage_curve(shell_sweep(base, z, train), sigmas, r_in, r_out)
  return Coverage(sigmas, cov, mult)


def coverage_rule(nn_dist: jax.Array, sigmas, d: int, c: float = 5.0) -> jax.Array:
  """Nearest-neighbour rule for coverage: ``P_q(Δ_NN(q) ≤ σ√(r_out² − d))``; shape ``(S,)``.

  ``q + σz`` reaches the shell of ``x`` when ``||q − x||² + σ²||z||² ≲ σ² r_out²``
  with ``||z||² ≈ d``, i.e. ``Δ ≤ σ√(2√(cd) + 2c) ≈ σ(4cd)^{1/4}`` for ``d ≫ c``.
  """
  _, r_out = shell_radii(d, c)
  reach = jnp.sqrt(r_out**2 - d)
  nn = jnp.asarray(nn_dist)
  return jnp.mean(nn[None, :] <= reach * _check_sigmas(sigmas)[:, None].astype(nn.dtype), axis=1)


# ---------------------------------------------------------------------------
# Regime boundaries.


def rough_boundaries(train: jax.Array, held_out: jax.Array, c: float = 5.0) -> dict:
  """Closed-form boundary guesses from nearest-neighbour distances (for grid placement).

  ``Δ_ho`` = median distance of a held-out point to its nearest training point;
  ``Δ_tt`` = median leave-one-out nearest-neighbour distance inside the training set.
  Coverage onset ``σ_cov = Δ_ho/(4cd)^{1/4}`` (``σ_cov_shell = Δ_ho/√(2√(cd)+2c)``, its
  low-d version); concentration fades at ``σ_conc = Δ_tt/(2√ln N)``, where the
  nearest competitor's log-weight gap ``Δ²/(2σ²)`` matches the ``ln N`` others (up to a factor 2).
  """
  train, held_out = jnp.asarray(train), jnp.asarray(held_out)
  _check_pair(train, held_out)
  n, d = train.shape
  if n < 3:
    raise ValueError(f"`train` must hold at least 3 points; got {n}.")
  d_ho = float(np.median(np.asarray(memorisation.nearest_two(held_out, train).d1)))
  d_tt = float(np.median(np.asarray(memorisation.nearest_two(train, train).d2)))
  _, r_out = shell_radii(d, c)
  return {"delta_nn_heldout": d_ho, "delta_nn_train": d_tt, "sigma_cov": d_ho / (4 * c * d) ** 0.25,
          "sigma_cov_shell": d_ho / float(np.sqrt(r_out**2 - d)),
          "sigma_conc": d_tt / (2.0 * float(np.sqrt(np.log(n))))}


def regime_boundaries(sigmas, coverage, concentration_w, threshold: float = 0.8) -> dict:
  """Boundaries read off the computed curves (σ ascending).

  ``σ_small`` = smallest σ with ``C_σ ≥ threshold`` (coverage onset);
  ``σ_large`` = largest σ with ``W_σ ≥ threshold`` (concentration still high);
  the danger zone is every grid σ with both, ``[danger_lo, danger_hi]`` its range
  (NaN where absent).
  """
  s, cov, w = (np.asarray(a, np.float64) for a in (sigmas, coverage, concentration_w))
  if s.ndim != 1 or cov.shape != s.shape or w.shape != s.shape:
    raise ValueError(f"`sigmas`, `coverage`, `concentration_w` must share one shape (S,); got "
                     f"{s.shape}, {cov.shape}, {w.shape}.")
  if np.any(np.diff(s) <= 0):
    raise ValueError("`sigmas` must be strictly increasing.")
  first = lambda m: float(s[np.argmax(m)]) if m.any() else float("nan")
  last = lambda m: float(s[len(s) - 1 - np.argmax(m[::-1])]) if m.any() else float("nan")
  danger = (cov >= threshold) & (w >= threshold)
  return {"sigma_small": first(cov >= threshold), "sigma_large": last(w >= threshold),
          "danger_mask": danger.tolist(), "danger_lo": first(danger), "danger_hi": last(danger),
          "threshold": threshold}


# ---------------------------------------------------------------------------
# Denoisers of trained models, in the VE view.


def fm_sigma_to_t(sigma):
  """VE noise level → linear-FM time: ``t = 1/(1 + σ)``.

  FM has ``x_t = t x + (1 − t) ε`` (data at t = 1), so ``x_t / t = x + ((1 − t)/t) ε``
  is a VE point with ``σ = (1 − t)/t``; inverting gives ``t = 1/(1 + σ)`` and
  ``y_FM = t · y_VE``. Since ``y_VE ↦ y_FM`` is a bijection, ``E[x | y_VE] = E[x | x_t]``.
  """
  return 1.0 / (1.0 + sigma)


def fm_t_to_sigma(t):
  """Linear-FM time → VE noise level ``σ = (1 − t)/t`` (inverse of :func:`fm_sigma_to_t`)."""
  return (1.0 - t) / t


def schedule_denoiser(field, params, schedule: paths.Schedule, sigma_to_t, parameterisation: str = "velocity"):
  """VE denoiser ``D(y, σ) = x̂(ψ(t) y, t)`` of a network ``field(params, x, t)`` trained on ``schedule``.

  ``sigma_to_t`` maps the VE level ``σ = σ_s(t)/ψ(t)`` to the schedule's time;
  the output is converted to a data prediction with :func:`memjax.paths.convert`.
  Returns ``denoise(y (Q, d), σ scalar) -> (Q, d)``.
  """
  def denoise(y, sigma):
    t = jnp.broadcast_to(jnp.asarray(sigma_to_t(sigma), y.dtype), y.shape[:1])
    x_t = schedule.psi(t)[:, None] * y
    return paths.convert(schedule, x_t, t, field(params, x_t, t), parameterisation, "x0")
  return denoise


def fm_denoiser(apply_fn, params) -> Denoiser:
  """VE denoiser of a linear flow-matching velocity field ``u_θ(x, t)``.

  ``t = 1/(1+σ)``, ``x_t = t·y`` and ``x̂ = x_t + (1 − t) u_θ(x_t, t)`` (velocity → x0 for ψ = t, σ = 1 − t).
  """
  return schedule_denoiser(apply_fn, params, paths.linear_fm(), fm_sigma_to_t, "velocity")


class Profile(NamedTuple):
  """Memorisation-by-noise-level profile of a model denoiser ``D_θ`` (each ``(S,)``)."""

  sigmas: jax.Array
  rel_dist: jax.Array       # E||D_θ − D*|| / E||D* − D_lin||  (≪ 1: behaves like the memorising optimum)
  alignment: jax.Array      # E⟨D_θ − D_lin, D* − D_lin⟩ / E||D* − D_lin||²  (1: D*, 0: D_lin)
  dist_model_opt: jax.Array  # E||D_θ − D*||
  dist_opt_lin: jax.Array    # E||D* − D_lin||


def denoiser_profile(key: jax.Array, denoiser: Denoiser, train: jax.Array, sigmas, *, points=None,
                     num_noise: int = 2, **chunks) -> Profile:
  """Per σ, how close a trained model's denoiser is to the empirical optimum ``D*`` of ``train``.

  Queries are ``y = p + σz`` with ``p`` the training points (default) or
  ``points``. The distance to ``D*`` is measured in units of the distance
  between ``D*`` and the linear-Gaussian denoiser ``D_lin`` (what a
  generalising Gaussian model would do), so ``rel_dist ≈ 0`` flags the σ at
  which the model reproduces the memorising optimum; ``alignment`` is the
  projection coefficient of ``D_θ − D_lin`` on ``D* − D_lin``.
  """
  train = jnp.asarray(train)
  sigmas = _check_sigmas(sigmas).astype(train.dtype)
  lg = fit_linear_gaussian(train)
  base, z = _noised_points(key, train if points is None else jnp.asarray(points, train.dtype), num_noise)
  rows = []
  for s in sigmas:
    y = base + s * z
    dstar = posterior(train, y, s, **chunks).denoiser
    dlin = linear_denoiser(lg, y, s)
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
  """Geometric grid ``σ_0 = σ_max > … > σ_K = σ_min`` with ``K = num_steps`` (shape ``(K + 1,)``)."""
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"need 0 < `sigma_min` < `sigma_max`; got {sigma_min}, {sigma_max}.")
  if num_steps < 1:
    raise ValueError(f"`num_steps` must be >= 1; got {num_steps}.")
  return np.geomspace(sigma_max, sigma_min, num_steps + 1)


def windowed(base: Denoiser, other: Denoiser, lo, hi, lam=1.0) -> Denoiser:
  """``D(y,σ) = (1 − λ) D_base + λ D_other`` for ``lo ≤ σ ≤ hi``, else ``D_base`` (σ a scalar).

  ``lo``, ``hi``, ``lam`` may be traced, so one compiled sampler serves every window.
  """
  def denoise(y, sigma):
    d_base = base(y, sigma)
    inside = (sigma >= lo) & (sigma <= hi)
    return jax.lax.cond(inside, lambda: (1.0 - lam) * d_base + lam * other(y, sigma), lambda: d_base)
  return denoise


class PFSample(NamedTuple):
  """Output of :func:`sample_pf`: samples and fixed-grid solver diagnostics."""

  x: jax.Array          # (Q, d) final samples D(y_K, σ_K)
  local_error: jax.Array  # (Q,) max over steps of ||y_Heun − y_Euler|| (embedded error estimate)
  num_evals: int          # denoiser evaluations per sample (2K + 1)


def sample_pf(denoiser: Denoiser, z: jax.Array, sigmas) -> PFSample:
  """Integrate the VE probability-flow ODE ``dy/dσ = (y − D(y, σ))/σ`` from ``σ_0`` down to 0.

  Heun's method (second order, EDM-style) on the decreasing grid ``sigmas``
  ``(K+1,)`` starting from ``y_0 = σ_0 z`` (``z`` ``(Q, d)`` standard normal), then
  the exact Euler step to ``σ = 0``, which returns ``x = D(y_K, σ_K)``. Pure and
  jit-able (``denoiser`` is closed over); the Heun–Euler difference of each step
  is reported as a local error estimate.
  """
  z = jnp.asarray(z)
  _checks.check_ndim("z", z, 2, "(Q, d)")
  sigmas = jnp.asarray(sigmas, z.dtype)
  _checks.check_ndim("sigmas", sigmas, 1, "(K + 1,)")
  if sigmas.shape[0] < 2:
    raise ValueError(f"`sigmas` must hold at least 2 levels; got {sigmas.shape[0]}.")
  _checks.check_positive("sigmas", sigmas)
  if _checks.is_concrete(sigmas) and np.any(np.diff(np.asarray(sigmas)) >= 0):
    raise ValueError("`sigmas` must be strictly decreasing (noise → data).")

  def step(carry, pair):
    y, err = carry
    s0, s1 = pair
    d0 = (y - denoiser(y, s0)) / s0
    y_euler = y + (s1 - s0) * d0
    d1 = (y_euler - denoiser(y_euler, s1)) / s1
    y_new = y + (s1 - s0) * 0.5 * (d0 + d1)
    return (y_new, jnp.maximum(err, jnp.linalg.norm(y_new - y_euler, axis=1))), None

  init = (sigmas[0] * z, jnp.zeros(z.shape[:1], z.dtype))
  (y, err), _ = jax.lax.scan(step, init, (sigmas[:-1], sigmas[1:]))
  return PFSample(denoiser(y, sigmas[-1]), err, 2 * (sigmas.shape[0] - 1) + 1)


def log_windows(sigma_min: float, sigma_max: float, num_windows: int) -> np.ndarray:
  """``num_windows`` adjacent windows ``[lo, hi]`` tiling ``[σ_min, σ_max]`` evenly in log σ; ``(W, 2)``."""
  edges = sigma_grid(sigma_min, sigma_max, num_windows)[::-1]
  return np.stack([edges[:-1], edges[1:]], 1)


# ---------------------------------------------------------------------------
# Quality proxy.


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """Energy distance ``2E||X − Y|| − E||X − X'|| − E||Y − Y'||`` (V-statistic, ≥ 0).

  ``x`` ``(n, d)`` and ``y`` ``(m, d)``; returns a scalar.

  Zero iff the two empirical measures coincide; it penalises both collapse
  (too little spread) and blur (mass off the data), unlike a nearest-neighbour
  distance. Caveat: in high dimension it is dominated by the first two moments,
  so a moment-matched Gaussian can score better than sharp but mode-dropping samples.
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  _checks.check_ndim("x", x, 2, "(n, d)")
  _checks.check_ndim("y", y, 2, "(m, d)")
  _checks.check_last_dim("y", y, x.shape[1], "(m, d)")
  dtype = jnp.result_type(x, y)
  return _energy_distance(x.astype(dtype), y.astype(dtype))


@jax.jit
def _energy_distance(x, y):
  mean_dist = lambda a, b: jnp.mean(jnp.sqrt(jnp.maximum(
      jnp.sum(a**2, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b**2, 1)[None, :], 0.0)))
  return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
