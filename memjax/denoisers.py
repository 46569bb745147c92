"""Denoisers ``D(y, σ)`` in the VE view: the empirical optimum, Wiener, trained models.

Everything is in the VE view ``y = ψ x + σ z`` with ``z ~ N(0, I)`` and, unless stated,
``ψ = 1``. For a training set ``{x_i}_{i=1..n} ⊂ R^d`` the noised empirical distribution is
``p̂_σ(y) = (1/n) Σ_i N(y; ψ x_i, σ² I)``, whose posterior over the source point is

    w_i(y, σ) = softmax_i(−||y − ψ x_i||² / (2σ²)),

and whose optimal (MMSE) denoiser and score are

    D*_σ(y) = E[x | y] = Σ_i w_i x_i,        ∇_y log p̂_σ(y) = (ψ D*_σ(y) − y) / σ².

* :func:`posterior` — chunked over the training set with a running log-sum-exp (never
  materialising ``(Q, n)``): ``D*``, log normaliser, max weight and entropy.
* :func:`linear_denoiser` — the linear-Gaussian (Wiener) denoiser
  ``D_lin(y) = μ̂ + Σ̂(Σ̂ + σ²I)⁻¹(y − μ̂)`` of the fitted :class:`LinearGaussian`.
* :func:`schedule_denoiser` / :func:`fm_denoiser` — a trained network as a VE denoiser.
* :func:`windowed` — blend two denoisers inside a σ window (interventions).

All denoisers share the protocol :data:`memjax.paths.Denoiser` ``D(y (Q, d), σ) -> (Q, d)``.

References:
  "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
  arXiv:2602.17846.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax import _checks, paths

Denoiser = paths.Denoiser


# ---------------------------------------------------------------------------
# Empirical posterior: chunked, stable log-sum-exp.


class Posterior(NamedTuple):
  """Posterior summaries of ``w_i(y, σ)`` for each query (leading axis ``Q``).

  ``n_eff`` is the property ``exp H``, the effective number of training points (1: fully
  concentrated, ``n``: uniform).

  Attributes:
    denoiser: ``(Q, d)`` optimal denoiser ``D*_σ(y) = Σ_i w_i x_i``.
    log_norm: ``(Q,)`` ``log Σ_i exp(−||y − ψ x_i||² / (2σ²))``.
    max_weight: ``(Q,)`` ``max_i w_i``.
    entropy: ``(Q,)`` ``H = −Σ_i w_i log w_i`` (nats).
  """

  denoiser: jax.Array  # (Q, d)  D*_σ(y) = Σ_i w_i x_i
  log_norm: jax.Array  # (Q,)    log Σ_i exp(−||y − ψ x_i||² / (2σ²))
  max_weight: jax.Array  # (Q,)    max_i w_i
  entropy: jax.Array  # (Q,)    H = −Σ_i w_i log w_i (nats)

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


def _check_sigma(sigma, nq):
  if jnp.ndim(sigma) not in (0, 1) or (jnp.ndim(sigma) == 1 and jnp.shape(sigma)[0] != nq):
    raise ValueError(
      f"`sigma` must be a scalar or have shape ({nq},); got shape {jnp.shape(sigma)}."
    )
  _checks.check_positive("sigma", sigma)


def posterior(
  train: jax.Array, y: jax.Array, sigma, *, psi=1.0, query_chunk: int = 512, train_chunk: int = 1024
) -> Posterior:
  """Posterior summaries of ``w_i(y, σ) = softmax_i(−||y − ψx_i||²/(2σ²))``, chunked.

  The training set is processed ``train_chunk`` points at a time with a running log-sum-exp, so
  the ``(Q, N)`` weight matrix is never formed.

  Args:
    train: training points ``(N, d)``.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or per query ``(Q,)``, ``> 0``.
    psi: data scaling ``ψ`` (1 in the VE view).
    query_chunk: queries per block.
    train_chunk: training points per block; peak memory ``O(query_chunk·(train_chunk + d))``.

  Returns:
    :class:`Posterior` with ``D*_σ(y)`` ``(Q, d)``, log normaliser, max weight and entropy ``(Q,)``.

  Raises:
    ValueError: on shape mismatches, NaN/inf points, a non-positive ``sigma`` or a chunk size
      below 1.
  """
  train, y = _checks.as_float("train", train), _checks.as_float("y", y)
  _checks.check_point_sets("train", train, "y", y)
  _check_sigma(sigma, y.shape[0])
  for name, val in (("query_chunk", query_chunk), ("train_chunk", train_chunk)):
    if val < 1:
      raise ValueError(f"`{name}` must be >= 1; got {val}.")
  dtype = jnp.result_type(train, y)
  return _posterior(
    train.astype(dtype),
    y.astype(dtype),
    jnp.asarray(sigma, dtype),
    jnp.asarray(psi, dtype),
    max(1, min(query_chunk, y.shape[0])),
    max(1, min(train_chunk, train.shape[0])),
  )


def posterior_weights(train: jax.Array, y: jax.Array, sigma, *, psi=1.0) -> jax.Array:
  """Dense weights ``w_i(y, σ) = softmax_i(−||y − ψx_i||²/(2σ²))`` (small problems and tests only).

  Args:
    train: training points ``(N, d)``.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or ``(Q,)``.
    psi: data scaling ``ψ``.

  Returns:
    ``(Q, N)`` weights; rows sum to 1.

  Raises:
    ValueError: on shape mismatches or NaN/inf points.
  """
  train, y = jnp.asarray(train), jnp.asarray(y)
  _checks.check_point_sets("train", train, "y", y)
  _check_sigma(sigma, y.shape[0])
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, y.dtype) ** 2, (y.shape[0],))
  return jax.nn.softmax(_block_logits(y, sig2, train, jnp.sum(train**2, 1), psi), axis=1)


def empirical_denoiser(train: jax.Array, y: jax.Array, sigma, **kw) -> jax.Array:
  """Optimal denoiser of the training set, ``D*_σ(y) = Σ_i w_i(y, σ) x_i``.

  Args:
    train: training points ``(N, d)``.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or ``(Q,)``.
    **kw: ``psi`` and the chunk sizes of :func:`posterior`.

  Returns:
    ``(Q, d)``.
  """
  return posterior(train, y, sigma, **kw).denoiser


def empirical_score(train: jax.Array, y: jax.Array, sigma, *, psi=1.0, **kw) -> jax.Array:
  """Score of ``p̂_σ = (1/N) Σ_i N(ψx_i, σ²I)``: ``∇_y log p̂_σ(y) = (ψ D*_σ(y) − y)/σ²``.

  Args:
    train: training points ``(N, d)``.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or ``(Q,)``.
    psi: data scaling ``ψ``.
    **kw: chunk sizes of :func:`posterior`.

  Returns:
    ``(Q, d)``.
  """
  den = posterior(train, y, sigma, psi=psi, **kw).denoiser
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, den.dtype) ** 2, (den.shape[0],))[:, None]
  return (psi * den - y) / sig2


# ---------------------------------------------------------------------------
# Linear-Gaussian (Wiener) denoiser.


class LinearGaussian(NamedTuple):
  """Gaussian fit ``N(μ̂, Σ̂)`` of the training set, ``Σ̂ = U diag(λ) Uᵀ`` (thin SVD, rank ≤ N, d).

  Attributes:
    mean: ``(d,)`` ``μ̂``.
    basis: ``(d, k)`` orthonormal columns ``U``.
    eigvals: ``(k,)`` ``λ = s²/N`` (the empirical measure's covariance, ``1/N`` normalisation).
  """

  mean: jax.Array  # (d,)
  basis: jax.Array  # (d, k) orthonormal columns U
  eigvals: jax.Array  # (k,) λ = s²/N (the empirical measure's covariance, 1/N normalisation)


def fit_linear_gaussian(train: jax.Array) -> LinearGaussian:
  """Mean and covariance ``Σ̂ = (1/N) X_cᵀX_c`` of the empirical measure (thin SVD of ``X_c``).

  Args:
    train: training points ``(N, d)``.

  Returns:
    :class:`LinearGaussian`.

  Raises:
    ValueError: if ``train`` is not ``(N, d)`` or holds NaN/inf.
  """
  train = jnp.asarray(train)
  _checks.check_ndim("train", train, 2, "(N, d)")
  _checks.check_finite("train", train)
  mean = jnp.mean(train, 0)
  _, s, vt = jnp.linalg.svd(train - mean[None, :], full_matrices=False)
  return LinearGaussian(mean, vt.T, s**2 / train.shape[0])


def linear_denoiser(lg: LinearGaussian, y: jax.Array, sigma) -> jax.Array:
  """Wiener denoiser ``D_lin(y) = μ̂ + U diag(λ/(λ+σ²)) Uᵀ(y − μ̂)``.

  It is ``E[x | y]`` for ``x ~ N(μ̂, Σ̂)``, ``y = x + σz`` (directions outside ``span U`` have
  zero variance and are denoised to ``μ̂``).

  Args:
    lg: :class:`LinearGaussian` from :func:`fit_linear_gaussian`.
    y: queries ``(Q, d)``.
    sigma: noise level, scalar or ``(Q,)``.

  Returns:
    ``(Q, d)``.
  """
  y = jnp.asarray(y)
  sig2 = jnp.broadcast_to(jnp.asarray(sigma, y.dtype) ** 2, y.shape[:1])[:, None]
  coef = (y - lg.mean[None, :]) @ lg.basis
  return lg.mean[None, :] + (coef * lg.eigvals[None, :] / (lg.eigvals[None, :] + sig2)) @ lg.basis.T


# ---------------------------------------------------------------------------
# Denoisers of trained models, in the VE view.


def schedule_denoiser(
  field, params, schedule: paths.Schedule, sigma_to_t, parameterisation: str = "velocity"
):
  """VE denoiser ``D(y, σ) = x̂(ψ(t) y, t)`` of a network ``field(params, x, t)`` on ``schedule``.

  ``sigma_to_t`` maps the VE level ``σ = σ_s(t)/ψ(t)`` to the schedule's time; the output is
  converted to a data prediction with :func:`memjax.paths.convert`.

  Args:
    field: the network ``field(params, x, t)``.
    params: its parameters.
    schedule: the :class:`memjax.paths.Schedule` it was trained on.
    sigma_to_t: ``σ -> t`` of that schedule (e.g. :func:`memjax.paths.fm_sigma_to_t`).
    parameterisation: the network's output.

  Returns:
    ``denoise(y (Q, d), σ ()) -> (Q, d)``, a :data:`memjax.paths.Denoiser`.
  """

  def denoise(y, sigma):
    t = jnp.broadcast_to(jnp.asarray(sigma_to_t(sigma), y.dtype), y.shape[:1])
    x_t = schedule.psi(t)[:, None] * y
    return paths.convert(schedule, x_t, t, field(params, x_t, t), parameterisation, "x0")

  return denoise


def fm_denoiser(apply_fn, params) -> Denoiser:
  """VE denoiser of a linear flow-matching velocity field: ``x̂ = x_t + (1 − t) u_θ(x_t, t)``.

  ``t = 1/(1+σ)`` and ``x_t = t·y`` (velocity → data prediction for ``ψ = t``, ``σ = 1 − t``).

  Args:
    apply_fn: the FM field ``u(params, x, t)``.
    params: its parameters.

  Returns:
    A :data:`memjax.paths.Denoiser`.
  """
  return schedule_denoiser(apply_fn, params, paths.linear_fm(), paths.fm_sigma_to_t, "velocity")


def windowed(base: Denoiser, other: Denoiser, lo, hi, lam=1.0) -> Denoiser:
  """``D(y, σ) = (1 − λ) D_base + λ D_other`` for ``lo ≤ σ ≤ hi``, else ``D_base``.

  ``lo``, ``hi``, ``lam`` may be traced, so one compiled sampler serves every window.

  Args:
    base: the denoiser used outside the window.
    other: the denoiser blended in inside it.
    lo: lower end of the window.
    hi: upper end of the window.
    lam: blend weight ``λ`` inside the window (1: swap).

  Returns:
    A :data:`memjax.paths.Denoiser` (``σ`` a scalar).

  References:
    "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
    arXiv:2602.17846.
  """

  def denoise(y, sigma):
    d_base = base(y, sigma)
    inside = (sigma >= lo) & (sigma <= hi)
    return jax.lax.cond(
      inside, lambda: (1.0 - lam) * d_base + lam * other(y, sigma), lambda: d_base
    )

  return denoise
