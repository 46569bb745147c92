"""memjax: measuring and reducing memorisation in flow-matching and diffusion models with geometry.

The public API is the set of modules below, one concept each (``memjax.lid.flipd``,
``memjax.laplace.fit``, ...):

* generic numerics: :mod:`linalg` (HVP, GGN, Lanczos, Hutchinson, exact trace),
  :mod:`neighbours` (chunked exact k-NN), :mod:`distributed` (row sharding), :mod:`metrics`;
* models and paths: :mod:`paths` (schedules, parameterisation converters, callable protocols),
  :mod:`nets`, :mod:`unet`, :mod:`models` (diffusers' DDPM UNet in Flax), :mod:`training`,
  :mod:`sampling`, :mod:`data`;
* the four views: :mod:`curvature` + :mod:`laplace` (Riemannian Laplace over weights),
  :mod:`lid` (local intrinsic dimension), :mod:`sharpness` (log-density sharpness, SAIL),
  :mod:`denoisers` + :mod:`regimes` (the three noise regimes), and :mod:`memorisation`
  (the nearest-neighbour ratio criterion);
* on top of all of them: :mod:`audit` (one trained model through every lens, a report page and
  the ``memjax-audit`` command).
"""

from memjax import (
  audit,
  curvature,
  data,
  denoisers,
  distributed,
  laplace,
  lid,
  linalg,
  memorisation,
  metrics,
  models,
  neighbours,
  nets,
  paths,
  regimes,
  sampling,
  sharpness,
  training,
  unet,
)

__version__ = "0.1.0"

__all__ = [
  "audit",
  "curvature",
  "data",
  "denoisers",
  "distributed",
  "laplace",
  "lid",
  "linalg",
  "memorisation",
  "metrics",
  "models",
  "neighbours",
  "nets",
  "paths",
  "regimes",
  "sampling",
  "sharpness",
  "training",
  "unet",
]
