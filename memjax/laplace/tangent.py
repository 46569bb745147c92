"""The tangent Gaussian ``N(0, Σ)`` at ``θ*`` and its velocities ``v = η Σ^{1/2} z``.

Given top-k eigenpairs ``(λ_i, u_i)`` of the data term's Hessian at ``θ*`` and the prior
precision ``α``,

  ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)``   (U: orthonormal rows u_i, shape (k, P)),

the Euclidean Laplace sample is ``θ_E = θ* + v``.

References:
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, linalg

Array = jax.Array


# ---------------------------------------------------------------------------
# Tangent Gaussian.


class TangentGaussian(NamedTuple):
  """Low-rank-plus-isotropic Gaussian ``N(0, Σ)`` in the tangent space at ``θ*``.

  Attributes:
    values: eigenvalues ``λ`` used in ``Σ`` (already clipped if requested), ``(k,)``.
    vectors: orthonormal rows ``U``, ``(k, P)``.
    alpha: prior precision ``α > 0`` (scalar).
  """

  values: Array
  vectors: Array
  alpha: Array


def _check_eig(eig):
  values, vectors = eig.values, eig.vectors
  _checks.check_ndim("eig.values", values, 1, "(k,)")
  _checks.check_ndim("eig.vectors", vectors, 2, "(k, P)")
  if np.shape(vectors)[0] != np.shape(values)[0]:
    raise ValueError(
      f"`eig.vectors` must have shape (k, P) with k = {np.shape(values)[0]} "
      f"(len of eig.values); got {np.shape(vectors)}."
    )
  _checks.check_finite("eig.values", values)
  _checks.check_finite("eig.vectors", vectors)


def tangent_gaussian(eig, alpha, clip: bool = True) -> TangentGaussian:
  """Build the tangent Gaussian ``N(0, Σ)`` from eigenpairs, with ``λ ← max(λ, 0)`` if ``clip``.

  ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)``. Ritz values of a Hessian can be negative (a
  non-convex loss, or Lanczos noise on nearly flat directions); a negative ``λ`` with
  ``|λ| ≥ α`` would make ``λ + α ≤ 0`` and ``Σ`` not a covariance. Clipping gives such directions
  no data curvature, so their variance is the prior's ``1/α``, and keeps ``Σ`` positive definite.

  Args:
    eig: anything with ``values (k,)`` and ``vectors (k, P)`` (e.g.
      :class:`memjax.linalg.Eigenpairs`).
    alpha: prior precision ``α > 0``.
    clip: clip negative Ritz values to 0 so that ``λ + α ≥ α > 0``.

  Returns:
    :class:`~memjax.laplace.TangentGaussian` holding the (clipped) values, the vectors and ``α`` in
    the vectors' dtype.

  Raises:
    ValueError: if ``eig.values`` is not ``(k,)``, ``eig.vectors`` is not ``(k, P)`` with the same
      ``k``, either contains NaN/inf, or ``alpha`` is not ``> 0``.
  """
  _check_eig(eig)
  _checks.check_positive("alpha", alpha)
  values = jnp.maximum(eig.values, 0.0) if clip else eig.values
  return TangentGaussian(values, eig.vectors, jnp.asarray(alpha, eig.vectors.dtype))


def _lift(x: Array, like: Array) -> Array:
  """Reshape a ``(k,)`` vector to broadcast explicitly against ``like`` ``(..., k)``."""
  return jnp.reshape(x, (1,) * (jnp.ndim(like) - 1) + jnp.shape(x))


def tangent_covariance(tg: TangentGaussian) -> Callable[[Array], Array]:
  """Matrix-free covariance product ``Σ w = Uᵀ diag(1/(λ+α)) U w + α⁻¹ (w − UᵀU w)``.

  Args:
    tg: the tangent Gaussian (:func:`~memjax.laplace.tangent_gaussian`).

  Returns:
    ``cov(w)``: ``(..., P) -> (..., P)``, applying ``Σ`` to the last axis of ``w``.
  """

  def cov(w: Array) -> Array:
    c = w @ tg.vectors.T  # (..., k)
    low = (c / _lift(tg.values + tg.alpha, c)) @ tg.vectors
    return low + (w - c @ tg.vectors) / tg.alpha

  return cov


def tangent_covariance_dense(tg: TangentGaussian) -> Array:
  """Dense covariance ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)`` — for tests and tiny P only.

  Args:
    tg: the tangent Gaussian (:func:`~memjax.laplace.tangent_gaussian`).

  Returns:
    ``Σ``, shape ``(P, P)``, in the dtype of ``tg.vectors``.
  """
  p = tg.vectors.shape[1]
  return tangent_covariance(tg)(jnp.eye(p, dtype=tg.vectors.dtype))


def tangent_sqrt(tg: TangentGaussian, z: Array, subspace_only: bool = False) -> Array:
  """Symmetric square root ``Σ^{1/2} z = Uᵀ diag((λ+α)^{-1/2}) U z + α^{-1/2} (z − UᵀU z)``.

  With ``subspace_only`` the second (complement) term is dropped, giving a sample
  with covariance ``Uᵀ diag(1/(λ+α)) U`` when ``z ~ N(0, I)``.

  Args:
    tg: the tangent Gaussian (:func:`~memjax.laplace.tangent_gaussian`).
    z: vectors to transform, shape ``(..., P)`` (standard normal for a sample).
    subspace_only: keep only the top-k term (drop the isotropic complement).

  Returns:
    ``Σ^{1/2} z`` (or its top-k part), shaped like ``z``.
  """
  c = z @ tg.vectors.T
  low = (c * _lift(jax.lax.rsqrt(tg.values + tg.alpha), c)) @ tg.vectors
  if subspace_only:
    return low
  return low + (z - c @ tg.vectors) * jax.lax.rsqrt(tg.alpha)


_MODES = ("full", "subspace", "single")


def sample_velocities(
  eig,
  alpha,
  eta,
  key: Array,
  num: int,
  mode: str = "subspace",
  index: int | None = None,
  clip: bool = True,
  check: bool = True,
  check_rtol: float = 1e-2,
) -> Array:
  """Initial velocities ``v = η Σ^{1/2} z`` of the Laplace samples.

  Modes (``z ~ N(0, I_P)``, ``ζ ~ N(0, 1)``):

  * ``"full"``: ``v = η [Uᵀ diag((λ+α)^{-1/2}) U z + α^{-1/2}(z − UᵀU z)]``, ``Cov = η² Σ``.
  * ``"subspace"``: ``v = η Uᵀ diag((λ+α)^{-1/2}) U z`` (top-k part only;
    the same key gives the same ``z`` as ``"full"``).
  * ``"single"``: ``v = η (λ_i+α)^{-1/2} ζ u_i`` with ``i = index``.

  Args:
    eig: ``values (k,)``, ``vectors (k, P)`` (orthonormal rows).
    alpha: prior precision ``α > 0``.
    eta: step scale ``η ≥ 0``.
    key: PRNG key.
    num: number of samples ``S``.
    mode: one of ``"full"``, ``"subspace"``, ``"single"``.
    index: eigenvector index for ``"single"``.
    clip: use ``max(λ, 0)`` (see :func:`~memjax.laplace.tangent_gaussian`).
    check: refuse eigenpairs whose residual ``||H u − λu||`` exceeds ``check_rtol · max|λ|``
      or whose vectors are not orthonormal (:func:`memjax.linalg.check_eigenpairs`); the
      covariance of such pairs is not the posterior's.
    check_rtol: the residual tolerance, relative to the largest ``|λ|``.

  Returns:
    ``(S, P)``.

  Raises:
    ValueError: for unconverged eigenpairs (with ``check``), or bad ``eta``/``num``/``mode``.
  """
  tg = tangent_gaussian(eig, alpha, clip=clip)  # validates shapes
  if check and hasattr(eig, "residuals"):
    linalg.check_eigenpairs(eig, rtol=check_rtol, name="eig")
  if _checks.is_concrete(eta) and not np.all(np.asarray(eta) >= 0):
    raise ValueError(f"`eta` must be >= 0; got {eta}.")
  _checks.check_positive("num", num)
  if mode not in _MODES:
    raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
  k, p = tg.vectors.shape
  dtype = tg.vectors.dtype
  if mode == "single":
    if index is None:
      raise ValueError("`index` (eigenvector index in [0, k)) is required for mode='single'.")
    if _checks.is_concrete(index) and not 0 <= int(index) < k:
      raise ValueError(f"`index` must be in [0, {k}); got {index}.")
    zeta = jax.random.normal(key, (num, 1), dtype)
    scale = eta * jax.lax.rsqrt(tg.values[index] + tg.alpha)
    return scale * zeta * tg.vectors[index][None, :]
  z = jax.random.normal(key, (num, p), dtype)
  return eta * tangent_sqrt(tg, z, subspace_only=(mode == "subspace"))


def euclidean(theta_map: Array, v: Array) -> Array:
  """Euclidean Laplace samples ``θ_E = θ* + v``.

  Args:
    theta_map: ``θ*``, ``(P,)``.
    v: tangent velocities, ``(P,)`` or ``(S, P)``.

  Returns:
    ``θ* + v``, shaped like ``v``.

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)``, or ``v`` is not ``(P,)`` or ``(S, P)`` with the
      same ``P``.
  """
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_ndim("v", v, (1, 2), "(P,) or (S, P)")
  _checks.check_last_dim("v", v, np.shape(theta_map)[0], "(..., P) with P = len(theta_map)")
  return jnp.expand_dims(theta_map, tuple(range(np.ndim(v) - 1))) + v
