"""The tangent-space fit at the MAP: Lanczos on the curvature loss, tilt, prior, refinement.

The loss is DATA (:class:`memjax.curvature.CurvatureLoss`) evaluated by ONE module-level function
(:func:`memjax.curvature.value`); every jitted core here takes the network's ``apply_fn`` (through
the hashable :class:`memjax.curvature.Loss`) static and the data traced. :func:`tilt` and
:func:`~memjax.laplace.with_prior` return new data, never wrappers, so a workflow compiles once.

References:
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199; Bergamin et al., "Riemannian Laplace approximations for Bayesian neural
  networks", arXiv:2306.07158.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import _checks, curvature, linalg
from memjax import curvature as _cv  # `fit` has a `curvature` argument
from memjax.laplace.geodesics import as_loss

Array = jax.Array


def fit_eigenpairs(
  loss_fn: Callable,
  theta_map: Array,
  k: int,
  key: Array,
  num_iters: int | None = None,
  *,
  args: Any = None,
) -> linalg.Eigenpairs:
  """Top-k Ritz pairs of ``H = ∇²L(θ*)`` by Lanczos on HVPs (``jvp∘grad``), raw (unclipped) values.

  Args:
    loss_fn: ``L(θ)``, ``(P,) -> ()``; or ``L(θ, args)`` when ``args`` is given (static callable,
      traced data: new data at the same shapes reuses the compiled Lanczos).
    theta_map: ``θ*``, ``(P,)``.
    k: number of eigenpairs.
    key: PRNG key for the Lanczos start vector.
    num_iters: Lanczos iterations (default as in :func:`memjax.linalg.lanczos_topk`).
    args: the loss's data (e.g. :class:`memjax.curvature.CurvatureLoss`), or ``None``.

  Returns:
    :class:`memjax.linalg.Eigenpairs`: the ``k`` largest Ritz values ``(k,)`` in decreasing order,
    their orthonormal vectors ``(k, P)`` and residuals ``||H u − λu||`` ``(k,)``.

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)`` or contains NaN/inf, or (from
      :func:`memjax.linalg.lanczos_topk`) ``k`` is not in ``[1, P]`` or ``num_iters`` not in
      ``[k, P]``.
  """
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_finite("theta_map", theta_map)
  for name, val in (("k", k), ("num_iters", num_iters)):
    if val is not None and not (isinstance(val, (int, np.integer)) and val >= 1):
      raise ValueError(f"`{name}` must be a positive int; got {val!r}.")
  loss = as_loss(loss_fn, args)
  iters = None if num_iters is None else int(num_iters)
  return _fit_eigenpairs(loss, int(k), iters, theta_map, key, args)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fit_eigenpairs(loss, k, num_iters, theta, key, args):
  matvec = lambda v: linalg.hvp(lambda th: loss(th, args), theta, v)[1]
  return linalg.lanczos_topk(matvec, theta.shape[0], k, key, num_iters=num_iters, dtype=theta.dtype)


CURVATURES = ("hessian", "ggn")


def fit_ggn_eigenpairs(
  apply_fn,
  theta_map: Array,
  data: curvature.CurvatureLoss,
  k: int,
  key: Array,
  num_iters: int | None = None,
) -> linalg.Eigenpairs:
  """Top-k Ritz pairs of the data term's generalised Gauss–Newton matrix ``G = 2s JᵀJ``.

  ``J = ∂r/∂θ_B`` is the Jacobian of the frozen-triple residuals
  ``r_b = u_θ(x_t,b, t_b) − (x1_b − x0_b)`` (:func:`memjax.curvature.residuals`) at ``θ*``; the
  data term ``s Σ_b ||r_b||²`` has Hessian ``G + 2s Σ_b r_bᵀ ∇²r_b``, and the GGN keeps the first,
  positive semi-definite part. Lanczos runs on ``v ↦ 2s Jᵀ(J v)``
  (:func:`memjax.linalg.ggn_vp`: one JVP and one VJP, no second derivative) in ONE module-level
  program with ``apply_fn`` static and ``data`` traced. The values are those of the DATA term (no
  ``α``); the tilt and the linearisation point of ``data`` do not enter ``G``.

  Args:
    apply_fn: ``u(params, x, t)``.
    theta_map: ``θ*_B``, ``(P,)``.
    data: the :class:`memjax.curvature.CurvatureLoss` (subset, triples, ``loss_scale``).
    k: number of eigenpairs.
    key: PRNG key of the Lanczos start vector.
    num_iters: Lanczos depth (default as in :func:`memjax.linalg.lanczos_topk`).

  Returns:
    :class:`memjax.linalg.Eigenpairs` of ``G`` (values ``≥ 0`` up to round-off).

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)`` or not finite, or ``k``/``num_iters`` are not
      positive ints in range.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold paired with the GGN Laplace approximation);
    Martens, "New insights and perspectives on the natural gradient method", arXiv:1412.1193.
  """
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_finite("theta_map", theta_map)
  for name, val in (("k", k), ("num_iters", num_iters)):
    if val is not None and not (isinstance(val, (int, np.integer)) and val >= 1):
      raise ValueError(f"`{name}` must be a positive int; got {val!r}.")
  iters = None if num_iters is None else int(num_iters)
  return _ggn_eigenpairs(curvature.Loss(apply_fn), int(k), iters, theta_map, key, data)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _ggn_eigenpairs(loss, k, num_iters, theta, key, data):
  residual_fn = lambda th: curvature.residuals(loss.apply_fn, th, data)
  matvec = lambda v: linalg.ggn_vp(residual_fn, theta, v, data.loss_scale)
  return linalg.lanczos_topk(matvec, theta.shape[0], k, key, num_iters=num_iters, dtype=theta.dtype)


def with_ggn(lfit: LaplaceFit, key: Array, *, k: int | None = None, num_iters: int | None = None):
  """The same fit with the eigenpairs of the data term's GGN ``2s JᵀJ`` instead of its Hessian.

  Everything else (losses, ``α``, tilt, ``θ*``) is kept, so the Euclidean/Riemannian samplers can
  use the Hessian fit and the linearised sampler this one (Bergamin et al.'s pairing) from one
  :func:`~memjax.laplace.fit`.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit` of the curvature loss (``lfit.loss`` its data).
    key: PRNG key of the Lanczos start vector.
    k: number of eigenpairs (default: as many as ``lfit.eig``).
    num_iters: Lanczos depth.

  Returns:
    :class:`~memjax.laplace.LaplaceFit` with ``eig`` of the GGN.

  Raises:
    ValueError: if the fit has no curvature-loss data (``lfit.loss is None``) or no ``apply_fn``.
  """
  if lfit.loss is None or lfit.apply_fn is None:
    raise ValueError("`lfit` must be a curvature-loss fit (laplace.fit): its GGN needs the data.")
  k = lfit.eig.values.shape[0] if k is None else k
  eig = fit_ggn_eigenpairs(lfit.apply_fn, lfit.theta_map, lfit.loss, k, key, num_iters)
  return lfit._replace(eig=eig)


def remainder_trace(
  lfit: LaplaceFit, key: Array, num_probes: int, *, curvature: str = "hessian"
) -> tuple[Array, Array]:
  """Hutchinson estimate of the data-term curvature OFF the top-k span: ``tr(Π H_D Π)``.

  ``Π = I − UᵀU`` projects onto the complement of the fit's eigenvectors ``U`` (``lfit.eig``), so
  ``tr(Π H_D Π) = tr(H_D) − Σ_i λ_i`` exactly when ``U`` are exact eigenvectors. ``H_D`` is the
  data term's Hessian ``∇²L − αI`` (``curvature="hessian"``) or its GGN ``2s JᵀJ``
  (``"ggn"``); the tilt does not enter either. Feeds
  :func:`~memjax.laplace.optimise_prior` / :func:`~memjax.laplace.log_evidence`
  (``remainder_trace=``) so that the ``P − k`` remaining directions are not taken as flat. One
  module-level program (``apply_fn`` static, data traced); the ``num_probes`` products are
  vmapped.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit` with curvature-loss data.
    key: PRNG key of the Rademacher probes.
    num_probes: ``m ≥ 1``.
    curvature: ``"hessian"`` or ``"ggn"`` (match the fit's eigenpairs).

  Returns:
    ``(estimate, sem)``: scalars; ``sem`` the Monte-Carlo standard error.

  Raises:
    ValueError: for an unknown ``curvature``, a non-positive ``num_probes`` or a fit without data.

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines", Commun. Stat. Simul. Comput. 19 (1990); MacKay, "Bayesian
    Interpolation", Neural Computation 4(3), 1992.
  """
  if curvature not in CURVATURES:
    raise ValueError(f"`curvature` must be one of {CURVATURES}; got {curvature!r}.")
  if not (isinstance(num_probes, (int, np.integer)) and num_probes >= 1):
    raise ValueError(f"`num_probes` must be a positive int; got {num_probes!r}.")
  if lfit.loss is None or lfit.apply_fn is None:
    raise ValueError("`lfit` must be a curvature-loss fit (laplace.fit).")
  return _remainder_trace(
    lfit.objective, curvature, int(num_probes), lfit.theta_map, key, lfit.loss, lfit.eig.vectors
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _remainder_trace(loss, kind, num_probes, theta, key, data, vectors):
  def project(v):
    return v - vectors.T @ (vectors @ v)

  if kind == "ggn":
    residual_fn = lambda th: curvature.residuals(loss.apply_fn, th, data)
    h_d = lambda v: linalg.ggn_vp(residual_fn, theta, v, data.loss_scale)
  else:
    h_d = lambda v: linalg.hvp(lambda th: loss(th, data), theta, v)[1] - data.alpha * v
  matvec = lambda v: project(h_d(project(v)))
  return linalg.hutchinson_trace(matvec, theta.shape[0], key, num_probes, dtype=theta.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _min_eigenvalue(loss, num_iters, theta, key, args):
  matvec = lambda v: -linalg.hvp(lambda th: loss(th, args), theta, v)[1]
  top = linalg.lanczos_topk(matvec, theta.shape[0], 1, key, num_iters=num_iters, dtype=theta.dtype)
  return -top.values[0]


@functools.partial(jax.jit, static_argnums=0)
def _grad(loss, theta, args):
  return jax.grad(loss)(theta, args)


def _grad_norm(loss, theta, args) -> Array:
  return jnp.linalg.norm(_grad(loss, theta, args))


def _evaluate(objective, data, theta):
  return objective(theta, data)


# ---------------------------------------------------------------------------
# The typed pipeline: one fit, named samplers that share one protocol.


class LaplaceFit(NamedTuple):
  """Everything a posterior sampler needs, from :func:`~memjax.laplace.fit`.

  A fit around a hand-written loss ``L(θ)`` is built with ``objective = laplace.as_loss(L)`` and
  ``loss = None`` (:func:`~memjax.laplace.tilt` and :func:`~memjax.laplace.with_prior` need the
  curvature loss's data).

  Attributes:
    apply_fn: the network field ``u(params, x, t)``.
    subset: :class:`memjax.curvature.ParamSubset` of the Bayesian leaves (frozen at the MAP);
      ``subset.merge(θ_B)`` gives full params.
    objective: the loss as a hashable two-argument callable ``(θ_B, data) -> ()``
      (:class:`memjax.curvature.Loss` of ``apply_fn``): the static part of every compiled program.
    loss: the curvature loss's data on the frozen triples
      (:class:`memjax.curvature.CurvatureLoss`; ``L(θ) = objective(θ, loss)``, or the closure view
      ``lfit.loss_fn``): the traced part.
    theta_map: ``θ*_B``, ``(P,)``.
    eig: top-k :class:`memjax.linalg.Eigenpairs` of the DATA term's Hessian ``∇²L(θ*) − αI``
      (raw Ritz values; the prior precision ``α`` is added back exactly once, by the tangent
      Gaussian).
    alpha: prior precision ``α`` of the tangent Gaussian.
    grad_norm: ``||∇L(θ*)||`` at the ``θ*`` used (after :func:`~memjax.laplace.refine_map`, if
      asked for).
    grad_norm_initial: ``||∇L||`` at the trained parameters, before any refinement.
    linearised: the loss of the model linearised in its weights at ``θ*`` (the same data with
      ``theta_lin = θ*``), used by the ``"linearised"`` sampler; ``None`` if not built.
    min_eigenvalue: smallest Ritz value of the FULL ``∇²L(θ*)`` (prior included), by Lanczos on
      ``−∇²L``; negative beyond tolerance means ``θ*`` is a saddle
      (:func:`~memjax.laplace.check_minimum`). ``nan`` when not computed (``fit(...,
      check_minimum=False)``).
  """

  apply_fn: Callable | None
  subset: curvature.ParamSubset | None
  objective: Callable
  loss: Any
  theta_map: Array
  eig: linalg.Eigenpairs
  alpha: Array
  grad_norm: Array
  grad_norm_initial: Array
  linearised: Any = None
  min_eigenvalue: Array | float = float("nan")

  @property
  def loss_fn(self) -> Callable[[Array], Array]:
    """Closure view ``θ_B -> objective(θ_B, loss)`` (jitting it compiles per closure)."""
    return functools.partial(_evaluate, self.objective, self.loss)

  @property
  def linearised_loss_fn(self) -> Callable[[Array], Array] | None:
    """Closure view of ``linearised`` (``None`` when the fit has none)."""
    if self.linearised is None:
      return None
    return functools.partial(_evaluate, self.objective, self.linearised)

  @property
  def triples(self) -> tuple[Array, Array, Array]:
    """The frozen curvature triples ``(x1 (B, D), x0 (B, D), t (B,))``."""
    return self.loss.triples


def fit(
  apply_fn,
  params,
  data: Array,
  key: Array,
  *,
  k: int,
  alpha,
  num_triples: int,
  select=None,
  loss_scale=None,
  num_data: int | None = None,
  num_iters: int | None = None,
  lanczos_key: Array | None = None,
  refine_tol: float | None = None,
  refine_max_steps: int = 500,
  check_minimum: bool = True,
  min_iters: int = 32,
  curvature: str = "hessian",
) -> LaplaceFit:
  """Fit the tangent Gaussian of a flow-matching model at its MAP ``params``.

  Draws ``num_triples`` frozen triples from ``data`` (:func:`memjax.curvature.make_triples`),
  builds the curvature loss ``L(θ_B) = s Σ_b ℓ_b + (α/2)||θ_B||²`` on the leaves chosen by
  ``select`` (:func:`memjax.curvature.param_subset`) and runs Lanczos on its Hessian-vector
  products (:func:`~memjax.laplace.fit_eigenpairs`). Arrays keep the dtype they are given (cast
  ``params`` and ``data`` to float64 first for a float64 posterior).

  The Laplace approximation expands ``L`` at a stationary point. A network trained by stochastic
  flow matching is not stationary for the frozen-triple loss (its gradient there is Monte-Carlo
  noise of the triples), so with ``refine_tol`` the subset parameters are first refined on ``L``
  by L-BFGS (:func:`~memjax.laplace.refine_map`) until ``||∇L|| ≤ refine_tol``; ``grad_norm``
  reports where it ended. The eigenpairs are those of the data term ``∇²L − αI`` (Lanczos runs on
  ``∇²L`` and ``α`` is subtracted from the Ritz values, the vectors are unchanged), so the tangent
  Gaussian ``Σ = U diag(1/(λ + α)) Uᵀ + α⁻¹(I − UUᵀ)`` counts the prior once.

  Args:
    apply_fn: ``u(params, x, t)``.
    params: MAP params pytree.
    data: training set ``(N, D)``.
    key: PRNG key of the frozen triples.
    k: number of eigenpairs.
    alpha: prior precision ``α > 0``.
    num_triples: ``B``.
    select: leaf selection (``None``: all parameters).
    loss_scale: ``s`` (``None``: ``num_data / B``).
    num_data: ``N`` for the default ``s``.
    num_iters: Lanczos depth (default ``min(P, 2k + 10)``).
    lanczos_key: PRNG key of the Lanczos start vector (default ``fold_in(key, 1)``).
    refine_tol: refine ``θ*`` on ``L`` until ``||∇L|| ≤ refine_tol`` (``None``: no refinement).
    refine_max_steps: L-BFGS step budget of the refinement.
    check_minimum: also estimate the smallest eigenvalue of ``∇²L(θ*)`` (``min_iters`` more
      Lanczos steps on ``−∇²L``) so that samplers can refuse a saddle
      (:func:`~memjax.laplace.check_minimum`).
    min_iters: Lanczos depth of that estimate.
    curvature: ``"hessian"`` (default: eigenpairs of the data term's Hessian ``∇²L − αI``) or
      ``"ggn"`` (eigenpairs of its generalised Gauss–Newton matrix ``2s JᵀJ`` of the frozen-triple
      residuals, :func:`~memjax.laplace.fit_ggn_eigenpairs`: the GGN Laplace approximation that
      Bergamin et al. pair with the linearised manifold). ``min_eigenvalue`` is that of the full
      Hessian either way (is ``θ*`` a minimum of ``L``?).

  Every compiled program of the fit (gradient, refinement, Lanczos, smallest eigenvalue) takes
  ``apply_fn`` static and the loss's data (:class:`memjax.curvature.CurvatureLoss`) traced, so a
  second fit at the same shapes — another seed, other triples, another ``α`` — compiles nothing.

  Returns:
    :class:`~memjax.laplace.LaplaceFit`.

  Raises:
    ValueError: for bad arguments, naming the argument: ``data`` not ``(N, D)`` or not finite,
      ``num_triples`` not ``> 0``, ``select`` choosing no leaf, ``alpha < 0``, ``num_data``
      missing or not ``> 0`` with ``loss_scale=None``, ``refine_tol``/``refine_max_steps`` not
      positive, ``k``/``num_iters`` out of range for Lanczos, ``curvature`` not in
      ``("hessian", "ggn")``.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199 (the curvature loss and its tangent Gaussian); Bergamin et al., "Riemannian
    Laplace approximations for Bayesian neural networks", arXiv:2306.07158 (the linearised loss).
  """
  curvature_kind = curvature
  if curvature_kind not in CURVATURES:
    raise ValueError(f"`curvature` must be one of {CURVATURES}; got {curvature_kind!r}.")
  k_lan = jax.random.fold_in(key, 1) if lanczos_key is None else lanczos_key
  subset = _cv.param_subset(params, select or None)
  triples = _cv.make_triples(key, data, num_triples)
  loss_data = _cv.curvature_data(
    params, *triples, subset=subset, alpha=alpha, loss_scale=loss_scale, num_data=num_data
  )
  objective = _cv.Loss(apply_fn)
  theta_map = subset.theta
  g0 = _grad_norm(objective, theta_map, loss_data)
  g1 = g0
  if refine_tol is not None:
    ref = refine_map(
      objective, theta_map, tol=refine_tol, max_steps=refine_max_steps, args=loss_data
    )
    theta_map, g1 = ref.theta, ref.grad_norm
  alpha = jnp.asarray(alpha, theta_map.dtype)
  if curvature_kind == "ggn":
    eig = fit_ggn_eigenpairs(apply_fn, theta_map, loss_data, k, k_lan, num_iters)
  else:
    eig = fit_eigenpairs(objective, theta_map, k, k_lan, num_iters=num_iters, args=loss_data)
    eig = eig._replace(values=eig.values - alpha)  # data term: the prior enters Σ once
  lin = linearise(loss_data, theta_map)
  lam_min = float("nan")
  if check_minimum:
    k_min = jax.random.fold_in(k_lan, 2)
    iters = min(int(min_iters), theta_map.shape[0])
    lam_min = _min_eigenvalue(objective, iters, theta_map, k_min, loss_data)
  return LaplaceFit(
    apply_fn, subset, objective, loss_data, theta_map, eig, alpha, g1, g0, lin, lam_min
  )


def linearise(data: curvature.CurvatureLoss, theta_lin: Array) -> curvature.CurvatureLoss:
  """The same loss with the network linearised in its weights at ``θ_lin``.

  ``L_lin(θ) = s Σ_b ||r_b(θ_lin) + J_b(θ_lin)(θ − θ_lin)||² + (α/2)||θ||²`` (plus the same tilt):
  a quadratic in ``θ`` whose Hessian is the generalised Gauss–Newton matrix ``2s JᵀJ + αI`` at
  every ``θ``, and whose value and gradient equal those of the curvature loss at ``θ_lin``.
  Geodesics of ``G = I + ∇L_lin ∇L_linᵀ`` are the linearised Riemannian Laplace samples: one
  Jacobian-vector and one vector-Jacobian product of the network per Hessian product instead of
  a second-order derivative.

  Args:
    data: a :class:`memjax.curvature.CurvatureLoss`.
    theta_lin: linearisation point ``θ_lin``, ``(P,)`` (the MAP).

  Returns:
    ``data`` with ``theta_lin`` set.

  Raises:
    ValueError: if ``theta_lin`` is not ``(P,)`` like ``data.tilt_point`` or holds NaN/inf.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold).
  """
  _checks.check_ndim("theta_lin", theta_lin, 1, "(P,)")
  _checks.check_last_dim("theta_lin", theta_lin, np.shape(data.tilt_point)[0], "(P,)")
  _checks.check_finite("theta_lin", theta_lin)
  return data._replace(theta_lin=theta_lin)


def linearised_loss(
  residual_fn: Callable[[Array], Array], theta_lin: Array, alpha, loss_scale
) -> Callable[[Array], Array]:
  """The curvature loss of the model linearised in its weights at ``θ_lin``, as a closure.

  ``L_lin(θ) = s Σ_b ||r_b(θ_lin) + J_b(θ_lin)(θ − θ_lin)||² + (α/2)||θ||²`` with the residuals
  ``r_b`` of :func:`memjax.curvature.curvature_residual_fn` and their Jacobian ``J_b`` (see
  :func:`~memjax.laplace.linearise`, the data form that :func:`~memjax.laplace.fit` uses).

  Args:
    residual_fn: ``r(θ)``, ``(P,) -> (B, D)``.
    theta_lin: linearisation point ``θ_lin``, ``(P,)`` (the MAP).
    alpha: prior precision ``α``.
    loss_scale: the data-term scale ``s``.

  Returns:
    ``loss_fn(θ)``: ``(P,) -> ()``.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold).
  """
  _checks.check_ndim("theta_lin", theta_lin, 1, "(P,)")
  _checks.check_finite("theta_lin", theta_lin)

  def loss_fn(theta: Array) -> Array:
    r0, jd = jax.jvp(residual_fn, (theta_lin,), (theta - theta_lin,))
    return loss_scale * jnp.sum((r0 + jd) ** 2) + 0.5 * alpha * jnp.sum(theta**2)

  return loss_fn


def _is_tilted(data: curvature.CurvatureLoss) -> bool:
  return bool(np.any(np.asarray(data.tilt_grad) != 0))


def tilt(lfit: LaplaceFit) -> LaplaceFit:
  """Make ``θ*`` stationary: ``L̃(θ) = L(θ) − g₀ᵀ(θ − θ*)`` with ``g₀ = ∇L(θ*)``.

  A network trained by stochastic flow matching is not stationary for the frozen-triple loss (its
  gradient there is the Monte-Carlo noise of the triples). Tilting removes that gradient exactly
  while keeping the Hessian (so the eigenpairs stay valid): ``∇L̃(θ*) = 0``, ``∇²L̃ = ∇²L``. The
  linearised loss, whose gradient at ``θ*`` is the same ``g₀``, is tilted by the same term.
  ``g₀`` is the gradient of the UNTILTED loss, so tilting twice equals tilting once.

  As a Bayesian model the tilted loss is the data term plus a Gaussian prior ``N(m, α⁻¹I)`` with
  mean ``m = θ* + ∇L_D(θ*)/α`` (up to a constant), a mean that depends on the data and on ``α``;
  :func:`~memjax.laplace.log_evidence` / :func:`~memjax.laplace.optimise_prior` assume the prior
  mean 0 of the untilted loss, so select ``α`` BEFORE tilting (as the experiments do) and read
  the tilt as removing the triples' gradient noise, not as a change of prior.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit`.

  Returns:
    the fit with tilted ``loss`` (and ``linearised``) data and
    ``grad_norm`` recomputed (no new closure: the compiled programs are reused).
  """
  theta0 = lfit.theta_map
  zero = jnp.zeros_like(theta0)
  g0 = _grad(lfit.objective, theta0, lfit.loss._replace(tilt_grad=zero, tilt_point=theta0))
  loss = lfit.loss._replace(tilt_grad=g0, tilt_point=theta0)
  lin = (
    None if lfit.linearised is None else lfit.linearised._replace(tilt_grad=g0, tilt_point=theta0)
  )
  g1 = _grad_norm(lfit.objective, theta0, loss)
  return lfit._replace(loss=loss, linearised=lin, grad_norm=g1)


def with_prior(lfit: LaplaceFit, alpha) -> LaplaceFit:
  """The same fit with prior precision ``alpha``: ``L ← L + ((α − α₀)/2)||θ||²``.

  The eigenpairs are those of the data term and do not depend on ``α``; the losses (used by the
  geodesics) get the new prior term, and ``grad_norm`` / ``min_eigenvalue`` are updated
  (``∇²L`` shifts by ``α − α₀``). ``θ*`` is kept: the prior is re-selected post hoc at the
  trained weights (as :func:`~memjax.laplace.optimise_prior` does), not re-trained. A tilted fit
  (:func:`tilt`) is re-tilted for the new prior, so ``θ*`` stays stationary.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit`.
    alpha: the new prior precision ``α > 0``.

  Returns:
    :class:`~memjax.laplace.LaplaceFit`.

  Raises:
    ValueError: if ``alpha`` is not a finite positive number.
  """
  _checks.check_positive("alpha", alpha)
  _checks.check_finite("alpha", alpha)
  new = jnp.asarray(alpha, lfit.theta_map.dtype)
  delta = new - lfit.alpha
  loss = lfit.loss._replace(alpha=new)
  lin = None if lfit.linearised is None else lfit.linearised._replace(alpha=new)
  out = lfit._replace(
    loss=loss,
    linearised=lin,
    alpha=new,
    min_eigenvalue=lfit.min_eigenvalue + delta,
  )
  if _is_tilted(lfit.loss):
    return tilt(out)
  return out._replace(grad_norm=_grad_norm(out.objective, out.theta_map, loss))


def check_minimum(lfit: LaplaceFit, rtol: float = 1e-2) -> None:
  """Refuse a fit whose ``θ*`` is a saddle of ``L`` (a Laplace approximation needs a minimum).

  ``θ*`` is taken as a saddle when the smallest eigenvalue of ``∇²L(θ*)`` (``lfit.min_eigenvalue``)
  is below ``−rtol · λ_max`` (``λ_max = max(eig.values) + α``); a ``nan`` estimate (not computed)
  passes.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit` (``lfit.min_eigenvalue`` from ``fit(...,
      check_minimum=True)``).
    rtol: tolerance on the negative eigenvalue, relative to ``λ_max``.

  Raises:
    ValueError: for a saddle, naming the eigenvalue and the ways out, or for an infinite
      ``lfit.min_eigenvalue``.
  """
  lam_min = float(lfit.min_eigenvalue)
  if not np.isfinite(lam_min):
    if np.isnan(lam_min):
      return
    raise ValueError(f"the smallest eigenvalue of ∇²L(θ*) is not finite ({lam_min}).")
  lam_max = float(np.max(np.asarray(lfit.eig.values))) + float(lfit.alpha)
  if lam_min < -rtol * abs(lam_max):
    raise ValueError(
      f"θ* is a saddle point of the curvature loss: ∇²L(θ*) has eigenvalue {lam_min:.4g} < 0 "
      f"(largest {lam_max:.4g}); the Laplace approximation there is not a posterior. Find a "
      "minimum first (laplace.refine_map, a larger `alpha`), or pass check=False to sample with "
      "the negative curvature clipped."
    )


class Refined(NamedTuple):
  """Output of :func:`~memjax.laplace.refine_map`.

  Attributes:
    theta: the refined ``θ*``, ``(P,)``.
    grad_norm: ``||∇L(θ)||`` at the end.
    initial_grad_norm: ``||∇L||`` at the start.
    steps: L-BFGS steps taken.
    converged: ``grad_norm ≤ tol``.
  """

  theta: Array
  grad_norm: Array
  initial_grad_norm: Array
  steps: Array
  converged: Array


def refine_map(
  loss_fn: Callable, theta: Array, *, tol: float, max_steps: int = 500, args: Any = None
) -> Refined:
  """Refine ``θ`` to a stationary point of ``L`` with optax L-BFGS (zoom line search).

  Steps until ``||∇L(θ)|| ≤ tol`` or ``max_steps``; the whole loop is one compiled
  ``lax.while_loop``, reused across calls with the same ``loss_fn`` (and new ``args``). The loop
  also stops at a non-finite gradient norm; ``converged`` is then ``False``.

  Args:
    loss_fn: ``L(θ)``, ``(P,) -> ()``, differentiable; or ``L(θ, args)`` when ``args`` is given.
    theta: the starting point, ``(P,)``.
    tol: gradient-norm target ``> 0``.
    max_steps: L-BFGS step budget (a positive int; static).
    args: the loss's data (e.g. :class:`memjax.curvature.CurvatureLoss`), or ``None``.

  Returns:
    :class:`~memjax.laplace.Refined`.

  Raises:
    ValueError: for a non-positive ``tol`` or ``max_steps``, or a ``theta`` that is not ``(P,)``
      or contains NaN/inf.
  """
  _checks.check_ndim("theta", theta, 1, "(P,)")
  _checks.check_finite("theta", theta)
  _checks.check_positive("tol", tol)
  if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
    raise ValueError(f"`max_steps` must be a positive int; got {max_steps!r}.")
  loss = as_loss(loss_fn, args)
  return _refine_jit(loss, int(max_steps), theta, jnp.asarray(tol, theta.dtype), args)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _refine_jit(loss, max_steps, theta, tol, args):
  f = lambda th: loss(th, args)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(f)
  g0 = jnp.linalg.norm(jax.grad(f)(theta))

  def cond(carry):
    _, _, step, gnorm = carry
    return (step < max_steps) & (gnorm > tol) & jnp.isfinite(gnorm)

  def body(carry):
    th, state, step, _ = carry
    value, grad = value_and_grad(th, state=state)
    updates, state = opt.update(grad, state, th, value=value, grad=grad, value_fn=f)
    th = optax.apply_updates(th, updates)
    return th, state, step + 1, jnp.linalg.norm(jax.grad(f)(th))

  init = (theta, opt.init(theta), jnp.asarray(0, jnp.int32), g0)
  th, _, steps, gnorm = jax.lax.while_loop(cond, body, init)
  return Refined(th, gnorm, g0, steps, gnorm <= tol)
