"""Posterior samplers that share one protocol: ``sampler(lfit, v, **options) -> PosteriorSamples``.

Euclidean (``θ* + v``), Riemannian (geodesics of ``G = I + ∇L∇Lᵀ``) and linearised (geodesics of
the weight-linearised loss); :func:`~memjax.laplace.posterior_samples` draws the SAME velocities
for all of them. Each evaluates the fit's loss through :class:`memjax.curvature.Loss` with the
loss's data traced, so a new fit at the same shapes reuses every compiled program.

References:
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199; Bergamin et al., "Riemannian Laplace approximations for Bayesian neural
  networks", arXiv:2306.07158.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax import _checks
from memjax.laplace.fitting import LaplaceFit, check_minimum
from memjax.laplace.geodesics import RiemannianResult, solve
from memjax.laplace.tangent import euclidean, sample_velocities

Array = jax.Array


class PosteriorSamples(NamedTuple):
  """Output of a posterior sampler (leading axis ``S``).

  Attributes:
    theta: flat samples ``(S, P)``; rows with ``success = False`` are NOT valid samples.
    success: ``(S,)`` bool.
    details: sampler-specific diagnostics (:class:`~memjax.laplace.RiemannianResult` for geodesics)
      or ``None``.
  """

  theta: Array
  success: Array
  details: RiemannianResult | None = None


@functools.partial(jax.jit, static_argnums=0)
def _finite_loss(loss, thetas, args):
  return jax.vmap(lambda th: jnp.isfinite(loss(th, args)))(thetas)


def euclidean_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Euclidean Laplace samples ``θ* + v`` (no options).

  A sample is successful when the curvature loss is finite there; one that lands in a region
  where the loss is ``nan``/``inf`` is reported as failed, never returned as a sample.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit`.
    v: tangent velocities, ``(S, P)`` (:func:`~memjax.laplace.sample_velocities`).
    **options: must be empty (accepted for the common sampler protocol).

  Returns:
    :class:`~memjax.laplace.PosteriorSamples` with ``details = None``.

  Raises:
    ValueError: if any option is given, or ``v`` does not match ``lfit.theta_map``.
  """
  if options:
    raise ValueError(f"the euclidean sampler takes no options; got {sorted(options)}.")
  theta = euclidean(lfit.theta_map, v)
  return PosteriorSamples(theta, _finite_loss(lfit.objective, theta, lfit.loss), None)


def riemannian_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Riemannian Laplace samples ``θ_R = γ(1)``, geodesics of ``G = I + ∇L ∇Lᵀ`` from ``θ*``.

  ``L`` is ``lfit.loss_fn``; a sample is successful when its geodesic solve is.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit`.
    v: initial velocities, ``(S, P)`` (:func:`~memjax.laplace.sample_velocities`).
    **options: keywords of :func:`~memjax.laplace.riemannian` (``solver``, ``rtol``, ``t1``, ...).

  Returns:
    :class:`~memjax.laplace.PosteriorSamples` with the :class:`~memjax.laplace.RiemannianResult` as
    ``details``.

  Raises:
    ValueError: as :func:`~memjax.laplace.riemannian`, for bad ``v`` or options.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199.
  """
  res = solve(lfit.objective, lfit.theta_map, v, lfit.loss, **options)
  return PosteriorSamples(res.theta, res.success, res)


def linearised_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Linearised Riemannian Laplace samples: geodesics of ``G = I + ∇L_lin ∇L_linᵀ``.

  ``L_lin`` is ``lfit.linearised`` (:func:`~memjax.laplace.linearised_loss`: the network linearised
  in its weights at ``θ*``); ``options`` are the keywords of :func:`~memjax.laplace.riemannian`. A
  geodesic that succeeded but ends where the TRUE curvature loss is not finite is reported as
  failed.

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit` with ``linearised`` data (as built by
      :func:`~memjax.laplace.fit`).
    v: initial velocities, ``(S, P)`` (:func:`~memjax.laplace.sample_velocities`).
    **options: keywords of :func:`~memjax.laplace.riemannian`.

  Returns:
    :class:`~memjax.laplace.PosteriorSamples` with the :class:`~memjax.laplace.RiemannianResult` as
    ``details``.

  Raises:
    ValueError: when the fit carries no linearised loss, or as :func:`~memjax.laplace.riemannian`
      for bad ``v`` or options.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold).
  """
  if lfit.linearised is None:
    raise ValueError("`lfit` has no linearised loss; build it with laplace.fit.")
  res = solve(lfit.objective, lfit.theta_map, v, lfit.linearised, **options)
  ok = jnp.logical_and(res.success, _finite_loss(lfit.objective, res.theta, lfit.loss))
  return PosteriorSamples(res.theta, ok, res)


SAMPLERS: dict[str, Callable[..., PosteriorSamples]] = {
  "euclidean": euclidean_sampler,
  "riemannian": riemannian_sampler,
  "linearised": linearised_sampler,
}


def posterior_samples(
  lfit: LaplaceFit,
  eta,
  key: Array,
  num: int,
  *,
  samplers=("euclidean", "riemannian"),
  mode: str = "subspace",
  index: int | None = None,
  options: dict | None = None,
  check: bool = True,
) -> tuple[Array, dict[str, PosteriorSamples]]:
  """Samples of several named samplers from the SAME tangent velocities ``v`` (paired).

  ``v = η Σ^{1/2} z`` (:func:`~memjax.laplace.sample_velocities` with ``lfit.eig``,
  ``lfit.alpha``); each name in ``samplers`` is looked up in :data:`~memjax.laplace.SAMPLERS` and
  called as ``sampler(lfit, v, **opts)`` with ``opts = options.get(name, {})``. Pass the same
  ``key`` for several ``eta`` to get samples that differ only in scale. ``mode``/``index`` as in
  :func:`~memjax.laplace.sample_velocities` (``"single"`` with ``index = 0``: along the top
  eigenvector only).

  With ``check``, unconverged eigenpairs are refused (:func:`~memjax.laplace.sample_velocities`)
  and, in ``"full"`` mode, so is a fit whose ``θ*`` is a saddle
  (:func:`~memjax.laplace.check_minimum`): the full Gaussian gives the complement of the top-k span
  the prior variance ``1/α``, which a negative curvature there contradicts. The
  ``"subspace"``/``"single"`` modes only use the top-k span, on which the Hessian is ``diag(λ + α)
  > 0`` — a minimum of ``L`` restricted to it — so they are defined at a saddle too
  (``lfit.min_eigenvalue`` reports it).

  Args:
    lfit: a :class:`~memjax.laplace.LaplaceFit`.
    eta: step scale ``η ≥ 0``.
    key: PRNG key of ``z``.
    num: number of samples ``S``.
    samplers: names in :data:`~memjax.laplace.SAMPLERS`.
    mode: ``"full"``, ``"subspace"`` or ``"single"`` (:func:`~memjax.laplace.sample_velocities`).
    index: eigenvector index for ``"single"``.
    options: ``{name: keywords}`` for the samplers (e.g. ``{"riemannian": {"rtol": 1e-8}}``).
    check: refuse unconverged eigenpairs and, in ``"full"`` mode, a saddle.

  Returns:
    ``(v (S, P), {name: PosteriorSamples})``.

  Raises:
    ValueError: for an unknown sampler name, a saddle, unconverged eigenpairs, or bad
      ``eta``/``num``/``mode``/``index`` (:func:`~memjax.laplace.sample_velocities`).
  """
  unknown = [n for n in samplers if n not in SAMPLERS]
  if unknown:
    raise ValueError(
      f"`samplers` must name entries of laplace.SAMPLERS {tuple(SAMPLERS)}; got {unknown}."
    )
  options = options or {}
  if check and mode == "full" and _checks.is_concrete(lfit.min_eigenvalue):
    check_minimum(lfit)
  v = sample_velocities(lfit.eig, lfit.alpha, eta, key, num, mode=mode, index=index, check=check)
  return v, {n: SAMPLERS[n](lfit, v, **options.get(n, {})) for n in samplers}
