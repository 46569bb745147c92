"""Matrix-free linear algebra: Hessian/GGN products, Lanczos, Hutchinson, an exact chunked trace.

Generic numerics that every estimator composes; nothing here knows about models or data.

* :func:`hvp` — gradient and Hessian-vector product ``(∇L, ∇²L v)`` from one
  ``jax.jvp(jax.grad(L))`` call.
* :func:`ggn_vp` — Gauss–Newton product ``2 s Jᵀ J v`` for ``L = s Σ_b ||r_b||²``.
* :func:`lanczos_topk` — top-k Ritz pairs (Lanczos, full reorthogonalisation, restarts on
  breakdown); :func:`check_eigenpairs` refuses unconverged pairs.
* :func:`hutchinson_trace` — stochastic trace with a standard error (matfree).
* :func:`exact_trace` — ``tr ∇f(y)`` of a map ``f: R^D → R^D`` by ``D`` JVPs in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matfree import stochtrace

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

  ``(g, Hv) = jax.jvp(∇L, (θ,), (v,))`` with ``g = ∇L(θ)`` and ``Hv = ∇²L(θ) v``: one
  gradient's cost plus a JVP, never the ``P × P`` Hessian.

  Args:
    loss_fn: scalar loss of a flat vector, ``(P,) -> ()``.
    theta: point ``θ``, shape ``(P,)``.
    v: direction, shape ``(P,)``, with the dtype of ``theta``.

  Returns:
    ``(g, Hv)``, both ``(P,)``.

  Raises:
    ValueError: if ``theta`` or ``v`` is not 1-D, their lengths or dtypes differ, or either holds
      NaN/inf.
  """
  _check_flat_pair(theta, v)
  return jax.jvp(jax.grad(loss_fn), (theta,), (v,))


def ggn_vp(residual_fn: Callable[[Array], Array], theta: Array, v: Array, scale) -> Array:
  """Generalised Gauss–Newton product ``G v = 2 s Jᵀ(J v)`` for a sum-of-squares loss.

  For ``L(θ) = s Σ_b ||r_b(θ)||²`` the GGN is ``G = 2 s JᵀJ`` with ``J = ∂r/∂θ``; the product
  costs one JVP and one VJP. Add ``α v`` yourself for the prior term ``(α/2)||θ||²``.

  Args:
    residual_fn: ``(P,) -> r`` of any shape (e.g. ``(B, D)``).
    theta: point ``θ``, ``(P,)``.
    v: direction, ``(P,)``, with the dtype of ``theta``.
    scale: the scalar ``s``.

  Returns:
    ``G v``, ``(P,)``.

  Raises:
    ValueError: if ``theta`` or ``v`` is not 1-D, their lengths or dtypes differ, or either holds
      NaN/inf.
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
  """Ritz pairs with ``λ_i ← max(λ_i, 0)`` (for a Laplace covariance).

  Args:
    pairs: :class:`Eigenpairs`.

  Returns:
    :class:`Eigenpairs` with clipped ``values``; ``vectors`` and ``residuals`` unchanged (the
    residuals stay those of the RAW values).
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
  """Top-k eigenpairs of a symmetric ``A`` by Lanczos with full reorthogonalisation and restarts.

  Runs ``m = num_iters`` Lanczos steps ``A Q ≈ Q T`` from a Gaussian start vector, every new
  vector orthogonalised twice against all previous ones. When the Krylov space becomes invariant
  (``β_j ≤ min(10·P·ε, √ε)·||T||``, e.g. ``A = αI + low rank``, or ``A = I`` after one step) the
  recursion restarts from a fresh random vector orthogonal to the basis, so ``T`` is block
  diagonal and its eigenpairs are exact for each invariant block: the top-k pairs of a
  low-rank-plus-identity operator come out right instead of as garbage (matfree's
  ``tridiag_sym`` has no such restart).
  ``T = S diag(θ) Sᵀ`` is diagonalised and the ``k`` largest Ritz pairs ``(θ_i, Sᵀ_i Q)`` are
  returned with explicit residuals ``||A u_i − θ_i u_i||`` (``k`` further matvecs). Values are raw
  (not clipped); see :func:`clip_nonnegative`.

  Args:
    matvec: ``(dim,) -> (dim,)``, symmetric.
    dim: ``P``.
    k: number of pairs, ``1 ≤ k ≤ dim``.
    key: PRNG key for the start vector (and restart vectors).
    num_iters: Krylov depth ``m``, ``k ≤ m ≤ dim``; default ``min(dim, 2k + 10)``.
    dtype: dtype of the start vector (default: JAX's default float).

  Returns:
    :class:`Eigenpairs` with ``values`` descending; check ``residuals`` (see
    :func:`check_eigenpairs`).

  Raises:
    ValueError: for ``dim``, ``k`` or ``num_iters`` out of range.

  References:
    Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
    differential and integral operators", J. Res. Nat. Bur. Standards 45 (1950); Parlett,
    "The Symmetric Eigenvalue Problem" (1998), ch. 13 (full reorthogonalisation).
  """
  if not (isinstance(dim, (int, np.integer)) and dim >= 1):
    raise ValueError(f"`dim` must be a positive int; got {dim!r}.")
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= dim):
    raise ValueError(f"`k` must be an int with 1 <= k <= dim={dim}; got {k!r}.")
  m = min(dim, 2 * k + 10) if num_iters is None else num_iters
  if not (isinstance(m, (int, np.integer)) and k <= m <= dim):
    raise ValueError(f"`num_iters` must be an int with k={k} <= num_iters <= dim={dim}; got {m!r}.")
  dtype = jnp.result_type(float) if dtype is None else dtype
  q_basis, diag, off = _lanczos(matvec, int(dim), int(m), key, dtype)
  t = jnp.diag(diag) + jnp.diag(off[:-1], 1) + jnp.diag(off[:-1], -1)
  theta, s = jnp.linalg.eigh(t)
  values = theta[::-1][:k]
  vectors = (s[:, ::-1][:, :k].T @ q_basis).astype(dtype)
  vectors = vectors / jnp.linalg.norm(vectors, axis=-1, keepdims=True)
  av = jax.lax.map(matvec, vectors)
  residuals = jnp.linalg.norm(av - values[:, None] * vectors, axis=-1)
  return Eigenpairs(values, vectors, residuals)


def _lanczos(matvec, dim, m, key, dtype):
  """``m`` Lanczos steps with full (twice) reorthogonalisation and restart on breakdown."""
  eps = jnp.finfo(dtype).eps
  keys = jax.random.split(key, m + 1)

  def orth(basis, w):
    for _ in range(2):  # "twice is enough"
      w = w - basis.T @ (basis @ w)
    return w

  def unit(v):
    return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(dtype).tiny)

  def step(j, carry):
    basis, diag, off, q, scale = carry
    basis = basis.at[j].set(q)
    w = matvec(q)
    a = jnp.dot(q, w)
    w = orth(basis, w)
    b = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.abs(a) + b)
    # Invariant subspace when β is round-off. Dropping β costs a residual of β, so the bound is
    # capped at √ε·||T|| (a dim-scaled bound alone, 10·dim·ε, is ~0.1·||T|| in float32 at
    # P ~ 1e5 and dropped real β at nearly every step).
    broke = b <= jnp.minimum(10 * dim * eps, jnp.sqrt(eps)) * scale
    fresh = unit(orth(basis, jax.random.normal(keys[j + 1], (dim,), dtype)))
    q_next = jnp.where(broke, fresh, w / jnp.where(broke, 1.0, b))
    return basis, diag.at[j].set(a), off.at[j].set(jnp.where(broke, 0.0, b)), q_next, scale

  q0 = unit(jax.random.normal(keys[0], (dim,), dtype))
  init = (
    jnp.zeros((m, dim), dtype),
    jnp.zeros((m,), dtype),
    jnp.zeros((m,), dtype),
    q0,
    jnp.zeros((), dtype),
  )
  basis, diag, off, _, _ = jax.lax.fori_loop(0, m, step, init)
  return basis, diag, off


def check_eigenpairs(pairs: Eigenpairs, rtol: float = 1e-3, name: str = "eig") -> None:
  """Refuse Ritz pairs that are not eigenpairs: ``||A u_i − λ_i u_i|| > rtol · max_j |λ_j|``.

  Also refuses non-orthonormal vectors (``max |UUᵀ − I| > 1e-4`` in float32, ``1e-8`` in float64)
  and non-finite values. Needs concrete arrays (a no-op under ``jit``).

  Args:
    pairs: :class:`Eigenpairs` from :func:`lanczos_topk`.
    rtol: allowed residual relative to the largest ``|λ|``.
    name: the caller's argument name, used in the error message.

  Returns:
    ``None``.

  Raises:
    ValueError: naming ``k``/``num_iters`` (raise Lanczos' depth or lower ``k``) when a residual is
      too large, the vectors are not orthonormal, or a value is non-finite.
  """
  values, vectors, residuals = pairs.values, pairs.vectors, pairs.residuals
  if not all(_checks.is_concrete(a) for a in (values, vectors, residuals)):
    return
  values, vectors, residuals = np.asarray(values), np.asarray(vectors), np.asarray(residuals)
  if not (np.all(np.isfinite(values)) and np.all(np.isfinite(vectors))):
    raise ValueError(f"`{name}` holds non-finite Ritz values or vectors (Lanczos failed).")
  scale = max(float(np.max(np.abs(values))), np.finfo(values.dtype).tiny)
  bad = np.flatnonzero(residuals > rtol * scale)
  if bad.size:
    raise ValueError(
      f"`{name}`: Ritz pairs {bad.tolist()} have residuals {residuals[bad].tolist()} above "
      f"{rtol} × max|λ| = {rtol * scale:.3g}; they are not converged eigenpairs. Increase "
      f"`num_iters` (Lanczos depth) or lower `k`, or pass check=False to use them anyway."
    )
  tol = 1e-8 if vectors.dtype == np.float64 else 1e-4
  err = np.max(np.abs(vectors @ vectors.T - np.eye(len(values))))
  if err > tol:
    raise ValueError(f"`{name}`: Ritz vectors are not orthonormal (max |UUᵀ − I| = {err:.3g}).")


def hutchinson_trace(
  matvec: Callable[[Array], Array],
  dim: int,
  key: Array,
  num_probes: int,
  dtype=None,
  sampler: str = "signs",
) -> tuple[Array, Array]:
  """Hutchinson estimate ``tr A ≈ (1/m) Σ_j z_jᵀ A z_j`` with its standard error.

  Uses matfree's ``estimator_monte_carlo_mean_and_sem``; the ``m`` matvecs are vmapped (memory
  ``m ×`` one matvec).

  Args:
    matvec: ``(dim,) -> (dim,)``.
    dim: ``P``.
    key: PRNG key.
    num_probes: ``m ≥ 1``.
    dtype: probe dtype (default: JAX's default float).
    sampler: ``"signs"`` (Rademacher) or ``"normal"``.

  Returns:
    ``(estimate, sem)``, scalars; ``sem = std_j(z_jᵀAz_j)/√m``.

  Raises:
    ValueError: if ``num_probes`` is not positive or ``sampler`` is unknown.

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines", Commun. Stat. Simul. Comput. 19 (1990).
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
  """``(f(y), tr ∇f(y))`` for ``f: (D,) -> (D,)`` by ``D`` JVPs ``tr ∇f = Σ_i e_iᵀ ∇f e_i``.

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
