"""Prior precision by the Laplace evidence (MacKay's fixed point), at a fixed ``θ*``.

References:
  MacKay, "Bayesian Interpolation", Neural Computation 4(3), 1992; Immer et al., "Scalable
  Marginal Likelihood Estimation for Model Selection in Deep Learning", arXiv:2104.04975.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks

Array = jax.Array


class PriorFit(NamedTuple):
  """Output of :func:`~memjax.laplace.optimise_prior`.

  Attributes:
    alpha: the evidence-maximising prior precision ``α̂``.
    log_evidence: :func:`~memjax.laplace.log_evidence` at ``α̂`` (with ``data_loss`` as given).
    effective_params: ``γ = Σ_i λ_i/(λ_i + α̂)`` (plus ``(P − k) λ̄/(λ̄ + α̂)`` with a remainder
      trace), the number of well-determined directions.
    num_negative: data-term Ritz values below 0 (clipped to 0, as in the tangent Gaussian).
  """

  alpha: Array
  log_evidence: Array
  effective_params: Array
  num_negative: Array


def _clipped(values):
  return jnp.maximum(values, 0.0)


def _remainder_value(values, p, remainder_trace):
  """Mean data-term eigenvalue ``λ̄ = max(t_rem, 0)/(P − k)`` of the remaining directions."""
  k = values.shape[0]
  if remainder_trace is None or p == k:
    return jnp.zeros((), values.dtype)
  return jnp.maximum(jnp.asarray(remainder_trace, values.dtype), 0.0) / (p - k)


def log_evidence(
  values,
  theta_map,
  alpha,
  *,
  data_loss=0.0,
  num_params: int | None = None,
  remainder_trace=None,
):
  """Laplace log marginal likelihood of the prior precision ``α`` (low-rank plus isotropic).

  ``log p(D | α) ≈ −L_D(θ*) − (α/2)||θ*||² + (P/2) log α − ½ log det(H_D + αI)`` for a Gaussian
  prior ``N(0, α⁻¹I)`` and data-term Hessian ``H_D``. With the top-k data-term eigenvalues
  ``λ_i`` (clipped at 0), the ``P − k`` remaining directions get ONE eigenvalue ``λ̄``: the
  log-determinant is ``Σ_i log(λ_i + α) + (P − k) log(λ̄ + α)`` in closed form. ``λ̄ = 0``
  (``remainder_trace=None``, the low-rank evidence) assumes ``H_D ≡ 0`` there; with
  ``remainder_trace = tr(H_D) − Σ_i λ_i`` (e.g. :func:`~memjax.laplace.remainder_trace`, a
  Hutchinson estimate on the complement) ``λ̄`` is its mean ``max(t_rem, 0)/(P − k)``.

  The prior mean is 0. A tilted loss (:func:`~memjax.laplace.tilt`) equals, up to a constant, the
  data term plus a prior ``N(m, α⁻¹I)`` with ``m = θ* + ∇L_D(θ*)/α``, a mean that depends on
  ``α`` itself; this evidence is that of the UNTILTED model (``m = 0``), which is why the
  experiments select ``α`` before they tilt (the tilt then only removes the gradient noise).

  Args:
    values: data-term eigenvalues ``λ`` (``LaplaceFit.eig.values``), ``(k,)``.
    theta_map: ``θ*``, ``(P,)``.
    alpha: ``α > 0`` (scalar or array: evaluated elementwise).
    data_loss: ``L_D(θ*)``, the data term at ``θ*`` (a constant in ``α``).
    num_params: ``P`` (default ``len(theta_map)``).
    remainder_trace: ``tr(H_D) − Σ_i λ_i`` on the ``P − k`` remaining directions, or ``None``
      (``H_D = 0`` there).

  Returns:
    the log evidence, shaped like ``alpha``.

  References:
    MacKay, "Bayesian Interpolation", Neural Computation 4(3), 1992; Immer et al., "Scalable
    Marginal Likelihood Estimation for Model Selection in Deep Learning", arXiv:2104.04975.
  """
  values, theta_map = _check_evidence_args(values, theta_map)
  _checks.check_positive("alpha", alpha)
  p = theta_map.shape[0] if num_params is None else int(num_params)
  k = values.shape[0]
  if p < k:
    raise ValueError(f"`num_params` must be >= k = {k}; got {p}.")
  lam = _clipped(values)
  lam_rem = _remainder_value(values, p, remainder_trace)
  alpha = jnp.asarray(alpha, theta_map.dtype)
  lam = jnp.reshape(lam, (1,) * alpha.ndim + lam.shape)
  logdet = jnp.sum(jnp.log(lam + alpha[..., None]), axis=-1) + (p - k) * jnp.log(lam_rem + alpha)
  sq = jnp.sum(theta_map**2)
  return -data_loss - 0.5 * alpha * sq + 0.5 * p * jnp.log(alpha) - 0.5 * logdet


def _check_evidence_args(values, theta_map):
  _checks.check_ndim("values", values, 1, "(k,)")
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_finite("values", values)
  _checks.check_finite("theta_map", theta_map)
  theta_map = _checks.as_float("theta_map", theta_map)
  return jnp.asarray(values, theta_map.dtype), theta_map


def optimise_prior(
  values,
  theta_map,
  *,
  data_loss=0.0,
  bounds=(1e-8, 1e8),
  num_iters: int = 200,
  remainder_trace=None,
) -> PriorFit:
  """The prior precision ``α̂`` maximising :func:`~memjax.laplace.log_evidence` (post hoc, at fixed
  ``θ*``).

  ``∂/∂α log p(D | α) = 0`` is MacKay's fixed point ``α ||θ*||² = γ(α)``,
  ``γ(α) = Σ_i λ_i/(λ_i + α) + (P − k) λ̄/(λ̄ + α)``; ``α||θ*||² − γ(α)`` is strictly increasing,
  so the maximiser is unique and found by bisection on ``log α`` within ``bounds``
  (``num_iters`` halvings; the whole search is one compiled program).

  The ``P − k`` remaining directions DO move ``α̂`` when the data term has curvature there: the
  low-rank evidence (``remainder_trace=None``, ``λ̄ = 0``) drops their share of ``γ`` and is
  biased LOW. If the remaining eigenvalues are ``≥ 0`` with sum ``t_rem``, Jensen's inequality
  (``λ ↦ λ/(λ + α)`` is concave) gives ``0 ≤ Σ_rem λ_j/(λ_j + α) ≤ (P − k) λ̄/(λ̄ + α)``, so
  ``α̂(λ̄ = 0) ≤ α̂(true) ≤ α̂(λ̄ = t_rem/(P − k))``: the two runs bracket the full-spectrum
  ``α̂`` (negative remaining eigenvalues, clipped in the full computation, can break the upper
  end).

  Args:
    values: data-term eigenvalues ``(k,)`` (``LaplaceFit.eig.values``; clipped at 0).
    theta_map: ``θ*``, ``(P,)``.
    data_loss: ``L_D(θ*)`` for the reported evidence value (does not move ``α̂``).
    bounds: search interval ``(α_lo, α_hi)``, ``0 < α_lo < α_hi``.
    num_iters: bisection steps.
    remainder_trace: ``tr(H_D) − Σ_i λ_i`` of the remaining directions
      (:func:`~memjax.laplace.remainder_trace`), or ``None`` (``H_D = 0`` there).

  Returns:
    :class:`~memjax.laplace.PriorFit` (``effective_params`` includes the remainder's share).

  Raises:
    ValueError: when the maximiser lies outside ``bounds`` — no positive curvature
      (the evidence grows as ``α → 0``) or ``θ* = 0`` (it grows as ``α → ∞``) — or for bad
      arguments.

  References:
    MacKay, "Bayesian Interpolation", Neural Computation 4(3), 1992; Immer et al., "Scalable
    Marginal Likelihood Estimation for Model Selection in Deep Learning", arXiv:2104.04975.
  """
  values, theta_map = _check_evidence_args(values, theta_map)
  lo, hi = (float(b) for b in bounds)
  if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
    raise ValueError(f"`bounds` must satisfy 0 < lo < hi (finite); got {bounds}.")
  if not (isinstance(num_iters, (int, np.integer)) and num_iters >= 1):
    raise ValueError(f"`num_iters` must be a positive int; got {num_iters!r}.")
  dtype = theta_map.dtype
  if remainder_trace is not None:
    _checks.check_finite("remainder_trace", remainder_trace)
  rem = (
    theta_map.shape[0] - values.shape[0],
    _remainder_value(values, theta_map.shape[0], remainder_trace),
  )
  lo_hi = jnp.asarray([lo, hi], dtype)
  h_lo, h_hi = (float(x) for x in _prior_residual(values, theta_map, lo_hi, rem))
  if h_lo >= 0:
    raise ValueError(
      f"the Laplace evidence increases as alpha -> 0 down to bounds[0] = {lo:g}: the data term "
      f"has no positive curvature to balance the prior (largest eigenvalue "
      f"{float(jnp.max(values)):.4g}, ||θ*||² = {float(jnp.sum(theta_map**2)):.4g})."
    )
  if h_hi <= 0:
    raise ValueError(
      f"the Laplace evidence increases as alpha -> inf up to bounds[1] = {hi:g} "
      f"(||θ*||² = {float(jnp.sum(theta_map**2)):.4g}): widen `bounds` or check `theta_map`."
    )
  alpha = _bisect_prior(
    int(num_iters), values, theta_map, jnp.asarray(lo, dtype), jnp.asarray(hi, dtype), rem
  )
  lam = _clipped(values)
  num_rem, lam_rem = rem
  return PriorFit(
    alpha,
    log_evidence(values, theta_map, alpha, data_loss=data_loss, remainder_trace=remainder_trace),
    jnp.sum(lam / (lam + alpha)) + num_rem * lam_rem / (lam_rem + alpha),
    jnp.sum(values < 0),
  )


def _prior_residual(values, theta_map, alpha, rem):
  num_rem, lam_rem = rem
  lam = _clipped(values)
  lam = jnp.reshape(lam, (1,) * jnp.ndim(alpha) + lam.shape)
  gamma = jnp.sum(lam / (lam + alpha[..., None]), axis=-1) + num_rem * lam_rem / (lam_rem + alpha)
  return alpha * jnp.sum(theta_map**2) - gamma


@functools.partial(jax.jit, static_argnums=0)
def _bisect_prior(num_iters, values, theta_map, lo, hi, rem):
  def body(_, bracket):
    a, b = bracket
    mid = 0.5 * (a + b)
    up = _prior_residual(values, theta_map, jnp.exp(mid), rem) < 0
    return jnp.where(up, mid, a), jnp.where(up, b, mid)

  a, b = jax.lax.fori_loop(0, num_iters, body, (jnp.log(lo), jnp.log(hi)))
  return jnp.exp(0.5 * (a + b))
