"""What the digits posterior experiments (frontier, subsets) share: set-up and one cell's numbers.

:func:`setup` loads digits, trains or restores the images experiment's UNet MAP, loads the
quality classifier and draws the per-model generation noise; :func:`evaluate_cell` generates with
a stack of posterior models (:func:`memjax.memorisation.stack_memorisation` through the
:class:`experiments.laplace.pipeline.Evaluator`) and reports ``M_c`` beside the quality metrics.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.laplace import images, quality
from memjax import memorisation, neighbours


class CellData:
  """Per-image numbers of one cell kept for the bootstrap: ratios ``r``, features and noise ids.

  ``ids[i]`` is the flat index ``s·N + n`` of the generation noise ``x0[s, n]`` image ``i`` came
  from (default ``0..len(r)−1``): the paired bootstrap of :mod:`experiments.laplace.frontier`
  resamples noise ids once per seed and applies the draw to every cell of every method.
  """

  def __init__(self, r, feats, ids=None):
    self.r, self.feats = np.asarray(r), np.asarray(feats)
    self.ids = np.arange(len(self.r)) if ids is None else np.asarray(ids, np.int64)
    if not (len(self.r) == len(self.feats) == len(self.ids)):
      raise ValueError(
        f"`r`, `feats` and `ids` must have one row per image; got {len(self.r)}, "
        f"{len(self.feats)}, {len(self.ids)}."
      )


def evaluate_cell(ev, thetas, ok, x0, classifier, held, k):
  """Numbers of the models ``thetas[ok]`` and their per-image data.

  ``x0`` is ``(S, N, D)``: model ``s`` generates from its OWN noise ``x0[s]``
  (:func:`memjax.sampling.generate_multi` with per-model noise). Every cell then holds ``S·N``
  images from distinct noise (the MAP cell too: ``θ*`` with all ``S·N`` noises), so digits-FD and
  precision/recall compare sets of the same effective size; with one shared ``x0`` a posterior
  whose models barely differ would produce near-duplicates and look worse on FD only because its
  effective sample is smaller. Pairing across samplers is kept: model ``s`` of every sampler uses
  ``x0[s]``.
  """
  ok = np.asarray(ok)
  stack = ev.memorise(thetas, x0, ok)
  xs = stack.pooled
  q = quality.quality_report(xs, held, classifier, k=k)
  nn = neighbours.nearest_two(jnp.asarray(xs, held.dtype), jnp.asarray(held))
  out = {
    "num_models": int(ok.sum()),
    "num_images": int(xs.shape[0]),
    "generation_failed": int(ok.sum() * stack.generated.shape[1] - stack.generated.sum()),
    "memorisation": stack.summary,
    "heldout_fm_loss": common.stats(np.asarray(ev.heldout_loss(thetas))[ok]),
    "nn_distance_to_heldout_mean": float(jnp.mean(nn.d1)),
    **{key: q[key] for key in ("digits_fd", "precision", "recall", "confidence")},
  }
  ids = np.flatnonzero(stack.generated)  # row-major (s, n): the order of `pooled`
  return out, CellData(stack.ratios[stack.generated], quality.features(classifier, xs), ids)


class Setup(NamedTuple):
  """What the frontier and subsets experiments share: data, the cached MAP, classifier, noise."""

  train: np.ndarray
  held: np.ndarray
  ckpt: str
  u: object
  params: object
  train_result: object
  train_seconds: float
  classifier: quality.DigitsClassifier
  x0: jax.Array  # (S, N, D): model s generates from x0[s]
  k_post: jax.Array
  k_sweep: jax.Array


def setup(cfg, workdir: str, dtype) -> Setup:
  """Digits, the MAP (trained or restored from its checkpoint), the classifier, the noise x0."""
  k_data, k_map, k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  train, held, shape = images.load_images(cfg.data, k_data)
  ckpt = os.path.abspath(
    cfg.train.restore or cfg.train.checkpoint_dir or os.path.join(workdir, "checkpoints")
  )
  with common.Timer() as t_train:
    u, params, res = images.train_map(cfg, train, shape, k_map, ckpt)
  # quality.exclude_train: the feature extractor never saw the generative model's training digits.
  exclude = train if cfg.quality.get("exclude_train", False) else None
  classifier = quality.load_classifier(
    quality.get_config(cfg.quality.classifier),
    cache_dir=cfg.quality.cache_dir or None,
    exclude=exclude,
  )
  shape_x0 = (cfg.posterior.num_posterior, cfg.eval.num_gen, train.shape[1])
  x0 = jax.random.normal(jax.random.fold_in(k_sweep, 99), shape_x0, dtype)
  return Setup(train, held, ckpt, u, params, res, t_train.seconds, classifier, x0, k_post, k_sweep)


def m_of(cell: dict, c: float) -> float:
  """``M_c`` of a cell."""
  return float(cell["memorisation"]["M_c"][memorisation.c_label(c)])
