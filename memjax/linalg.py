"""Matrix-free linear algebra: Hessian/GGN products, Lanczos, Hutchinson, an exact chunked trace.

Generic numerics that every estimator composes; nothing here knows about models or data.

* :func:`hvp` — gradient and Hessian-vector product ``(∇L, ∇²L v)`` from one
  ``jax.jvp(jax.grad(L))`` call.
* :func:`ggn_vp` — Gauss–Newton product ``2 s Jᵀ J v`` for ``L = s Σ_b ||r_b||²``.
* :func:`lanczos_topk` — top-k Ritz pairs (matfree Lanczos, full reorthogonalisation).
* :func:`hutchinson_trace` — stochastic trace with a standard error (matfree).
* :func:`exact_trace` — ``tr ∇f(y)`` of a map ``f: R^D → R^D`` by ``D`` JVPs in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matfree import decomp, eig, stochtrace

from memjax import _checks

Array = jax.Array


# ---------------------------------------------------------------------------
# Products with the Hessian and the Gauss–Newton matrix.


def _check_flat_pair(theta, v):
  _checks.check_ndim("theta", theta, 1, "(P,)")
  _checks.check_ndim("v", v, 1, "(P,)")
  _checks.check_last_dim("v", v, np.shape(theta)[0], "(P,) like `theta`")
  if jnp.result_type(v) != jnp.result_type(theta):
    raise ValueError(
      f"`v` must have the dtype of `theta` ({jnp.result_type(theta)}); got {jnp.result_type(v)}."
    )
  _checks.check_finite("theta", theta)
  _checks.check_finite("v", v)


def hvp(loss_fn: Callable[[Array], Array], theta: Array, v: Array) -> tuple[Array, Array]:
  """Gradient and Hessian-vector product from one forward-over-reverse call.

  ``(g, Hv) = jax.jvp(∇L, (θ,), (v,))`` with ``g = ∇L(θ)`` and ``Hv = ∇²L(θ) v``.

  Args:
    loss_fn: scalar loss of a flat vector, ``(P,) -> ()``.
    theta: point ``θ``, shape ``(P,)``.
    v: direction, shape ``(P,)``.

  Returns:
    ``(g, Hv)``, both ``(P,)``.
  """
  _check_flat_pair(theta, v)
  return jax.jvp(jax.grad(loss_fn), (theta,), (v,))


def ggn_vp(residual_fn: Callable[[Array], Array], theta: Array, v: Array, scale) -> Array:
  """Generalised Gauss–Newton product for a sum-of-squares loss.

  For ``L(θ) = s Σ_b ||r_b(θ)||²`` the GGN is ``G = 2 s JᵀJ`` with
  ``J = ∂r/∂θ``; returns ``G v = 2 s Jᵀ(J v)`` (one jvp and one vjp). Add
  ``α v`` yourself for the prior term ``(α/2)||θ||²``.

  Args:
    residual_fn: ``(P,) -> r`` of any shape (e.g. ``(B, D)``).
    theta: ``(P,)``.
    v: ``(P,)``.
    scale: the scalar ``s``.

  Returns:
    ``(P,)``.
  """
  _check_flat_pair(theta, v)
  r, jv = jax.jvp(residual_fn, (theta,), (v,))
  _, vjp = jax.vjp(residual_fn, theta)
  (jtjv,) = vjp(jv.astype(r.dtype))
  return 2.0 * scale * jtjv


# ---------------------------------------------------------------------------
# Lanczos and Hutchinson.


class Eigenpairs(NamedTuple):
  """Top-k Ritz pairs of a symmetric operator ``A``.

  Attributes:
    values: raw Ritz values ``λ_1 ≥ … ≥ λ_k`` (may be negative), ``(k,)``.
    vectors: Ritz vectors as ROWS ``u_i``, ``(k, P)``, orthonormal up to round-off.
    residuals: ``||A u_i − λ_i u_i||``, ``(k,)``.
  """

  values: Array
  vectors: Array
  residuals: Array


def clip_nonnegative(pairs: Eigenpairs) -> Eigenpairs:
  """Return ``pairs`` with ``λ_i ← max(λ_i, 0)`` (for the Laplace covariance).

  Residuals are left as computed with the RAW values.
  """
  return pairs._replace(values=jnp.maximum(pairs.values, 0.0))


def lanczos_topk(
  matvec: Callable[[Array], Array],
  dim: int,
  k: int,
  key: Array,
  num_iters: int | None = None,
  dtype=None,
) -> Eigenpairs:
  """Top-k eigenpairs of a symmetric ``A`` by Lanczos with full reorthogonalisation.

  Runs ``m = num_iters`` Lanczos steps from a Gaussian start vector
  (``A Q ≈ Q T``, matfree ``tridiag_sym(m, reortho="full")``), diagonalises
  the ``m × m`` tridiagonal ``T = S diag(θ) Sᵀ`` and returns the ``k`` largest
  Ritz pairs ``(θ_i, Sᵀ_i Q)`` with explicit residuals ``||A u_i − θ_i u_i||``
  (``k`` further matvecs, run sequentially). Values are raw (not clipped);
  see :func:`clip_nonnegative`.

  Args:
    matvec: ``(dim,) -> (dim,)``, symmetric.
    dim: ``P``.
    k: number of pairs, ``1 ≤ k ≤ dim``.
    key: PRNG key for the start vector.
    num_iters: Krylov depth ``m``, ``k ≤ m ≤ dim``; default ``min(dim, 2k + 10)``.
      Larger ``m`` converges the top pairs further. A Lanczos breakdown (an exactly
      invariant Krylov space before ``m`` steps) produces NaNs; reduce ``m``.
    dtype: dtype of the start vector (default: JAX's default float).

  Returns:
    :class:`Eigenpairs` with ``values`` descending.
  """
  if not (isinstance(dim, (int, np.integer)) and dim >= 1):
    raise ValueError(f"`dim` must be a positive int; got {dim!r}.")
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= dim):
    raise ValueError(f"`k` must be an int with 1 <= k <= dim={dim}; got {k!r}.")
  m = min(dim, 2 * k + 10) if num_iters is None else num_iters
  if not (isinstance(m, (int, np.integer)) and k <= m <= dim):
    raise ValueError(f"`num_iters` must be an int with k={k} <= num_iters <= dim={dim}; got {m!r}.")
  dtype = jnp.result_type(float) if dtype is None else dtype
  v0 = jax.random.normal(key, (dim,), dtype)
  vals, vecs = eig.eigh_partial(decomp.tridiag_sym(int(m), reortho="full"))(matvec, v0)
  values = vals[::-1][:k]
  vectors = vecs[::-1][:k]
  av = jax.lax.map(matvec, vectors)
  residuals = jnp.linalg.norm(av - values[:, None] * vectors, axis=-1)
  return Eigenpairs(values, vectors, residuals)


def hutchinson_trace(
  matvec: Callable[[Array], Array],
  dim: int,
  key: Array,
  num_probes: int,
  dtype=None,
  sampler: str = "signs",
) -> tuple[Array, Array]:
  """Hutchinson estimate ``tr A ≈ (1/m) Σ_j z_jᵀ A z_j`` with its standard error.

  Uses matfree's ``estimator_monte_carlo_mean_and_sem``; the ``m`` matvecs are
  vmapped (memory ``m ×`` one matvec).

  Args:
    matvec: ``(dim,) -> (dim,)``.
    dim: ``P``.
    key: PRNG key.
    num_probes: ``m``.
    dtype: probe dtype (default: JAX's default float).
    sampler: ``"signs"`` (Rademacher) or ``"normal"``.

  Returns:
    ``(estimate, sem)``, scalars; ``sem = std_j(z_jᵀAz_j)/√m``.
  """
  _checks.check_positive("num_probes", num_probes)
  dtype = jnp.result_type(float) if dtype is None else dtype
  like = jnp.zeros((dim,), dtype)
  samplers = {"signs": stochtrace.sampler_signs, "normal": stochtrace.sampler_normal}
  if sampler not in samplers:
    raise ValueError(f"`sampler` must be one of {tuple(samplers)}; got {sampler!r}.")
  est = stochtrace.estimator_monte_carlo_mean_and_sem(
    stochtrace.monte_carlo_trace(), samplers[sampler](like, num=num_probes)
  )
  return est(matvec, key)


def exact_trace(f: Callable[[Array], Array], y: Array, chunk_size: int = 64) -> tuple[Array, Array]:
  """``(f(y), tr ∇f(y))`` for ``f: (D,) -> (D,)`` by ``D`` JVPs ``e_iᵀ ∇f e_i``.

  One ``jax.linearize`` (a single forward pass), then the JVPs are vmapped ``chunk_size`` at a
  time (``lax.map`` over chunks), so peak memory is ``chunk_size`` tangents, never ``D × D``.

  Args:
    f: map ``(D,) -> (D,)``.
    y: point, ``(D,)``.
    chunk_size: JVPs vmapped at once (clipped to ``[1, D]``).

  Returns:
    ``(f(y) (D,), trace ())``.
  """
  d = y.shape[-1]
  chunk = max(1, min(int(chunk_size), d))
  out, lin = jax.linearize(f, y)
  basis = jnp.pad(jnp.eye(d, dtype=y.dtype), ((0, (-d) % chunk), (0, 0))).reshape(-1, chunk, d)
  diag = jax.lax.map(lambda e: jnp.sum(jax.vmap(lin)(e) * e, axis=-1), basis)
  return out, jnp.sum(diag)
