"""Laplace approximations over weights: tangent Gaussian, Euclidean and Riemannian samples.

Given top-k eigenpairs ``(λ_i, u_i)`` of the Hessian of a loss ``L`` at its minimiser ``θ*``
(:func:`fit`; products and Lanczos from :mod:`memjax.linalg`), the tangent Gaussian is

  ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)``   (U: orthonormal rows u_i, shape (k, P)),

velocities are ``v = η Σ^{1/2} z`` and samples are either Euclidean, ``θ_E = θ* + v``, or
Riemannian, ``θ_R = γ(1)`` for the geodesic ``γ`` of the metric ``G(θ) = I + ∇L ∇Lᵀ`` (the metric
of the loss graph ``(θ, L(θ))``) with ``γ(0) = θ*``, ``γ̇(0) = v``:

  ``γ̈ = − g (γ̇ᵀ H γ̇) / (1 + gᵀg)``,  ``g = ∇L(γ)``,  ``H = ∇²L(γ)``.

One module per concept, one namespace:

* :mod:`memjax.laplace.tangent` — the tangent Gaussian and its velocities;
* :mod:`memjax.laplace.geodesics` — the geodesic ODE, solved with diffrax;
* :mod:`memjax.laplace.evidence` — the prior precision by the Laplace evidence;
* :mod:`memjax.laplace.fitting` — :func:`fit`, :func:`tilt`, :func:`with_prior`,
  :func:`refine_map`;
* :mod:`memjax.laplace.samplers` — the named samplers and :func:`posterior_samples`.

The weight-space loss is DATA (:class:`memjax.curvature.CurvatureLoss`), passed traced to
module-level compiled programs beside the network's ``apply_fn`` (static): a second fit, seed,
tilt or prior at the same shapes compiles nothing.
"""

from memjax.laplace import evidence, fitting, geodesics, samplers, tangent
from memjax.laplace.evidence import PriorFit, log_evidence, optimise_prior
from memjax.laplace.fitting import (
  LaplaceFit,
  Refined,
  check_minimum,
  fit,
  fit_eigenpairs,
  fit_ggn_eigenpairs,
  linearise,
  linearised_loss,
  refine_map,
  remainder_trace,
  tilt,
  with_ggn,
  with_prior,
)
from memjax.laplace.geodesics import (
  RiemannianResult,
  as_loss,
  geodesic_rhs,
  geodesic_speed,
  riemannian,
  summarise_failures,
)
from memjax.laplace.samplers import (
  SAMPLERS,
  PosteriorSamples,
  euclidean_sampler,
  linearised_sampler,
  posterior_samples,
  riemannian_sampler,
)
from memjax.laplace.tangent import (
  TangentGaussian,
  euclidean,
  sample_velocities,
  tangent_covariance,
  tangent_covariance_dense,
  tangent_gaussian,
  tangent_sqrt,
)

__all__ = [
  "LaplaceFit",
  "PosteriorSamples",
  "PriorFit",
  "Refined",
  "RiemannianResult",
  "SAMPLERS",
  "TangentGaussian",
  "as_loss",
  "check_minimum",
  "euclidean",
  "euclidean_sampler",
  "evidence",
  "fit",
  "fit_eigenpairs",
  "fit_ggn_eigenpairs",
  "with_ggn",
  "fitting",
  "geodesic_rhs",
  "geodesic_speed",
  "geodesics",
  "linearise",
  "linearised_loss",
  "linearised_sampler",
  "log_evidence",
  "optimise_prior",
  "posterior_samples",
  "refine_map",
  "remainder_trace",
  "riemannian",
  "riemannian_sampler",
  "sample_velocities",
  "samplers",
  "summarise_failures",
  "tangent",
  "tangent_covariance",
  "tangent_covariance_dense",
  "tangent_gaussian",
  "tangent_sqrt",
  "tilt",
  "with_prior",
]
