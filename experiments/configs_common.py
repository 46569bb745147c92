"""Config sections shared by the experiments' configs (``experiments/**/configs/*.py``).

Each builder returns an :class:`ml_collections.ConfigDict` whose fields come in the order given,
so a config reads as "which sections, with which values"; :func:`variant` checks the variant
argument of ``get_config`` and :func:`shrink_mlp` is the smoke-size MLP fit.
"""

from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict

# The c grid of M_c shared by the Laplace experiments.
CS = (0.1, 0.2, 1 / 3, 0.5)  # the papers' c grid (squared criterion); c = 1 marks everything
# (baseline, candidate) samplers of the Laplace experiments' claims.
COMPARE = ("euclidean", "riemannian")


def variant(arg: str | None, allowed=("", "smoke")) -> str:
  """``arg`` (``""`` for ``None``) if it is in ``allowed``, else a ``ValueError`` naming them."""
  arg = arg or ""
  if arg not in allowed:
    names = [repr(a) for a in allowed]
    raise ValueError(f"unknown config variant {arg!r}; use {', '.join(names[:-1])} or {names[-1]}.")
  return arg


def base(progress: bool = True, **sections) -> ConfigDict:
  """``seed = 0``, ``workdir = ""`` (default: ``runs/<experiment>/<timestamp>``), ``progress``,
  then ``sections`` (dicts become ConfigDicts)."""
  return ConfigDict(dict(seed=0, workdir="", progress=progress, **sections))


def mlp_model(hidden, time_dim: int = 32, **fields) -> ConfigDict:
  """A :class:`memjax.nets.MLPField` section: ``fields`` first, then ``hidden``, ``time_dim``."""
  return ConfigDict(dict(**fields, hidden=hidden, time_dim=time_dim))


def adam_train(steps: int, batch_size: int, lr: float = 2e-3, **fields) -> ConfigDict:
  """A :func:`experiments.common.fit` section (cosine-decayed Adam): steps, batch, lr, fields."""
  return ConfigDict(dict(steps=steps, batch_size=batch_size, lr=lr, **fields))


def ode_sample(num_samples: int, tol: float, solver: str = "tsit5") -> ConfigDict:
  """Adaptive-ODE generation (:func:`memjax.sampling.generate`) with ``rtol = atol = tol``."""
  return ConfigDict(dict(num_samples=num_samples, solver=solver, rtol=tol, atol=tol))


def shrink_mlp(section, hidden, steps: int, batch_size: int) -> None:
  """Smoke size of a section with ``model`` and ``train``: MLP widths, steps and batch size."""
  section.model.hidden = hidden
  section.train.update(steps=steps, batch_size=batch_size)


def laplace_posterior(
  *,
  select: str,
  num_triples: int,
  loss_scale: float = 1.0,
  alpha: float = 1.0,
  lanczos_k: int = 20,
  samplers=COMPARE,
  mode: str = "subspace",
  etas,
  num_posterior: int,
  geo_solver: str = "tsit5",
  geo_rtol: float,
  geo_atol: float,
  geo_max_steps: int,
) -> ConfigDict:
  """The ``posterior`` section of the Laplace experiments (:mod:`experiments.laplace.pipeline`).

  Curvature loss ``L(θ) = s Σ_b ℓ_b + (α/2)||θ||²`` (``loss_scale`` s, prior precision
  ``alpha`` α) on ``num_triples`` frozen triples, over the parameters ``select`` (``""`` = all),
  ``lanczos_k`` Lanczos pairs; then ``num_posterior`` paired samples (the same tangent velocity
  for every sampler of ``samplers``) per η of ``etas``, geodesics by ``geo_*``. The fields come
  in the order of the arguments.
  """
  return ConfigDict(dict(locals()))


def laplace_eval(
  *,
  num_gen: int,
  gen_solver: str = "tsit5",
  gen_rtol: float,
  gen_atol: float,
  num_heldout_triples: int,
  cs=CS,
  headline_c: float = 1 / 3,
  compare=COMPARE,
  **fields,
) -> ConfigDict:
  """The ``eval`` section of the Laplace experiments: ``num_gen`` generations per model,
  held-out triples, the c grid of M_c, the headline c (the papers' 1/3, must be in ``cs``; it
  drives the claims, the frontier's stop rule and every "M_c" figure), the claims' (baseline,
  candidate), then ``fields``."""
  if not any(abs(c - headline_c) < 1e-12 for c in cs):
    raise ValueError(f"`headline_c` = {headline_c} must be one of `cs` = {tuple(cs)}.")
  section = dict(locals())
  section.update(section.pop("fields"))
  return ConfigDict(section)
