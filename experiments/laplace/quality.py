r"""Sample quality of 8×8 digit images: digits-FD, improved precision / recall, confidence.

A small MLP classifier is trained ONCE on the 1797 scikit-learn digits (optionally without a given
set, e.g. a generative model's training digits: ``load_classifier(..., exclude=train)``, used by
the frontier with ``quality.exclude_train``) and cached as a verified
orbax checkpoint (:func:`memjax.training.train`: checksums and a run fingerprint; a rerun loads
it, a cache of another configuration is refused). It serves as a FEATURE EXTRACTOR, the role the
Inception network plays for the FID: its penultimate layer gives the features in which
:func:`memjax.metrics.frechet_distance` ("digits-FD") and :func:`memjax.metrics.precision_recall`
compare generated images with held-out digits, and its softmax gives the confidence (mean
maximum class probability). Because the final extractor has seen every digit, its accuracy on
them is a training accuracy; the generalisation number is the held-out accuracy of the same
recipe trained on a stratified 80 % split, reported beside it.

Images come in the format of :mod:`experiments.laplace.images`: float32 pixels in ``[−1, 1]``
(:func:`memjax.data.load_digits`), flattened ``(N, 64)`` or ``(N, 8, 8[, 1])``. Generated images
are scored as they are (no clipping to ``[−1, 1]``). The nearest-neighbour distance to held-out
images stays where it is computed (:mod:`experiments.laplace.images`); :func:`quality_report`
only carries it along when given. ``run(cfg, workdir)`` trains or loads the classifier and
calibrates the metrics on known cases (disjoint real sets, copies of the reference, copies of a
few digits as a memorising generator makes them, noisy digits, pure noise)::

  python -m experiments.laplace.quality                    # default classifier
  python -m experiments.laplace.quality --config=experiments/laplace/quality.py:smoke
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import configs_common as cc
from memjax import data, metrics, training

# The default ``--config``: this module's own :func:`get_config`.
CONFIG = os.path.abspath(__file__)

IMAGE_SHAPE = (8, 8, 1)
NUM_PIXELS = 64
NUM_CLASSES = 10
# Cache of trained classifiers (one sub-directory per configuration), under the repository's runs/.
DEFAULT_CACHE_DIR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  "runs",
  "cache",
  "digits_classifier",
)
_ROW_MULTIPLE = 256  # feature batches are padded to a multiple of this: few compiled shapes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Classifier and calibration settings; variants ``""`` (default) and ``smoke``.

  Args:
    arg: the variant, ``""``/``None`` or ``"smoke"`` (few training steps, for tests).

  Returns:
    A config with sections ``model`` (hidden widths, feature width), ``train`` (cosine Adam of
    :func:`experiments.common.fit`, weight decay), ``split`` (held-out fraction for the honest
    accuracy) and ``eval`` (k of precision / recall, calibration set size and noise levels).

  Raises:
    ValueError: on an unknown variant.
  """
  arg = cc.variant(arg)
  c = cc.base(progress=False)
  c.cache_dir = ""  # "": DEFAULT_CACHE_DIR
  c.model = ml_collections.ConfigDict(dict(hidden=(256,), feature_dim=64))
  c.train = cc.adam_train(3000, 128, lr=2e-3, weight_decay=1e-4)
  c.split = ml_collections.ConfigDict(dict(heldout_fraction=0.2, enabled=True))
  c.eval = ml_collections.ConfigDict(
    dict(
      k=3,
      num_samples=256,
      noise_stds=(0.1, 0.3, 0.6),
      floor_sizes=(32, 64, 128, 256, 512),
      floor_repeats=5,
      num_memorised=16,
    )
  )
  if arg == "smoke":
    c.train.update(steps=300)
    c.eval.update(num_samples=64, noise_stds=(0.3,), floor_sizes=(64,), floor_repeats=2)
  return c


class DigitsMLP(nn.Module):
  """MLP classifier ``x (B, 64) → (features (B, F), logits (B, 10))``.

  ``h = silu(W_L … silu(W_1 x))``, features ``φ = silu(W_F h)`` (the penultimate layer, width
  ``feature_dim``), logits ``W_o φ``.
  """

  hidden: Sequence[int] = (256,)
  feature_dim: int = 64
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array):
    h = x
    for i, width in enumerate(self.hidden):
      h = nn.silu(nn.Dense(width, name=f"dense_{i}")(h))
    feats = nn.silu(nn.Dense(self.feature_dim, name="features")(h))
    return feats, nn.Dense(self.num_classes, name="logits")(feats)


class DigitsClassifier(NamedTuple):
  """A trained :class:`DigitsMLP`: module, parameters and what its training measured."""

  module: DigitsMLP
  params: Any
  info: dict  # accuracies, steps, cache directories, resumed steps, seconds (plain numbers)


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, params, x):
  feats, logits = module.apply(params, x)
  return feats, jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _init(module, key):
  return module.init(key, jnp.zeros((1, NUM_PIXELS), jnp.float32))


def _refuse_nonfinite(name: str, x: np.ndarray) -> None:
  if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    raise ValueError(f"`{name}` contains {bad} non-finite value(s) (NaN or inf); refusing it.")


def as_images(name: str, images) -> np.ndarray:
  """Digit images as float32 ``(N, 64)``, from ``(N, 64)`` or ``(N, 8, 8)`` or ``(N, 8, 8, 1)``.

  Args:
    name: the caller's argument name, for error messages.
    images: pixels in the scale of :func:`memjax.data.load_digits` (``[−1, 1]`` for real ones).

  Returns:
    The flattened float32 images.

  Raises:
    ValueError: if the shape is not one of the above, the set is empty, or a pixel is NaN/inf.
  """
  x = np.asarray(images)
  if x.dtype.kind not in "fiub":
    raise ValueError(f"`{name}` must hold real pixel values; got dtype {x.dtype}.")
  if x.ndim < 2 or x.shape[0] < 1 or x.shape[1:] not in ((64,), (8, 8), IMAGE_SHAPE):
    raise ValueError(
      f"`{name}` must have shape (N, 64), (N, 8, 8) or (N, 8, 8, 1) with N >= 1; got {x.shape}."
    )
  with np.errstate(over="ignore"):  # values beyond the float32 range become inf: refused below
    out = x.reshape(x.shape[0], NUM_PIXELS).astype(np.float32)
  _refuse_nonfinite(name, out)
  return out


def _features_and_probs(classifier: DigitsClassifier, name: str, images):
  x = as_images(name, images)
  n = x.shape[0]
  pad = (-n) % _ROW_MULTIPLE
  xp = np.concatenate([x, np.zeros((pad, NUM_PIXELS), np.float32)]) if pad else x
  feats, probs = _forward(classifier.module, classifier.params, jnp.asarray(xp))
  return np.asarray(feats, np.float64)[:n], np.asarray(probs, np.float64)[:n]


def features(classifier: DigitsClassifier, images) -> np.ndarray:
  """Penultimate-layer features ``φ(x)`` of the classifier, float64 ``(N, F)``.

  Args:
    classifier: from :func:`load_classifier`.
    images: see :func:`as_images`.

  Returns:
    The features, one row per image.
  """
  return _features_and_probs(classifier, "images", images)[0]


def probabilities(classifier: DigitsClassifier, images) -> np.ndarray:
  """Class probabilities ``softmax(logits(x))``, float64 ``(N, 10)``.

  Args:
    classifier: from :func:`load_classifier`.
    images: see :func:`as_images`.

  Returns:
    The probabilities, one row per image.
  """
  return _features_and_probs(classifier, "images", images)[1]


def confidence(probs) -> float:
  """Classifier confidence ``mean_n max_c p(c | x_n)`` (``1/10`` for a uniform classifier).

  Args:
    probs: class probabilities ``(N, C)`` (:func:`probabilities`).

  Returns:
    The mean maximum probability as a Python float.

  Raises:
    ValueError: if ``probs`` is not a finite non-empty ``(N, C)`` array.
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[0] < 1:
    raise ValueError(f"`probs` must have shape (N, C) with N >= 1; got shape {p.shape}.")
  _refuse_nonfinite("probs", p)
  return float(np.mean(np.max(p, axis=1)))


def accuracy(classifier: DigitsClassifier, images, labels) -> float:
  """Fraction of ``images`` whose most probable class is ``labels``.

  Args:
    classifier: from :func:`load_classifier`.
    images: see :func:`as_images`.
    labels: integer classes ``(N,)``.

  Returns:
    The accuracy as a Python float.

  Raises:
    ValueError: if ``labels`` does not have one entry per image.
  """
  p = probabilities(classifier, images)
  y = np.asarray(labels).ravel()
  if y.shape != (p.shape[0],):
    raise ValueError(f"`labels` must have shape ({p.shape[0]},); got {np.shape(labels)}.")
  return float(np.mean(np.argmax(p, axis=1) == y))


def _objective(module, x, y, batch_size: int, weight_decay: float):
  """``loss_fn(params, key)``: cross-entropy on a minibatch plus ``(λ/2) ‖θ‖²``."""
  x, y = jnp.asarray(x), jnp.asarray(y)

  def loss_fn(params, key):
    idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    _, logits = module.apply(params, x[idx])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()
    l2 = sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))
    return ce + 0.5 * weight_decay * l2

  return loss_fn


def _fit(cfg, module, x, y, key, checkpoint_dir):
  k_init, k_train = jax.random.split(key)
  params = _init(module, k_init)
  loss_fn = _objective(module, x, y, cfg.train.batch_size, cfg.train.weight_decay)
  fingerprint = {
    "model": cfg.model,
    "steps": int(cfg.train.steps),
    "images": training.data_fingerprint(x),
    "labels": training.data_fingerprint(y),
  }
  params, losses, res = common.fit(
    loss_fn,
    params,
    cfg.train,
    k_train,
    checkpoint_dir=checkpoint_dir,
    progress=cfg.progress,
    chunk_size=1000,
    fingerprint=fingerprint,
  )
  return params, losses, res.resumed_from


def cache_key(cfg) -> str:
  """Short SHA-256 of the settings that define a classifier (model, train, split, seed).

  Args:
    cfg: a config of :func:`get_config`.

  Returns:
    12 hex digits, the name of the configuration's sub-directory of the cache.
  """
  ident = {k: common.to_jsonable(cfg[k]) for k in ("model", "train", "split", "seed")}
  return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def excluded_indices(x, exclude) -> np.ndarray:
  """Indices of the rows of ``x`` ``(N, 64)`` that equal a row of ``exclude`` (exact pixels; a
  digit present twice in ``x`` is excluded twice).

  Raises:
    ValueError: if a row of ``exclude`` is not among the digits.
  """
  ex = as_images("exclude", exclude).reshape(-1, NUM_PIXELS).astype(np.float32)
  keys = {}
  for i, row in enumerate(np.asarray(x, np.float32)):
    keys.setdefault(row.tobytes(), []).append(i)
  missing = [j for j, row in enumerate(ex) if row.tobytes() not in keys]
  if missing:
    raise ValueError(
      f"`exclude` rows {missing[:5]} are not scikit-learn digits (pixels must match exactly)."
    )
  return np.unique(np.concatenate([keys[row.tobytes()] for row in ex]))


def load_classifier(cfg=None, cache_dir: str | None = None, *, exclude=None) -> DigitsClassifier:
  """Train (first call) or load (later calls) the digits feature extractor.

  With ``split.enabled`` the recipe is first trained on a stratified ``1 − heldout_fraction``
  split and its accuracy on the rest is measured (the honest generalisation number); the
  extractor itself is then trained with the same recipe on all 1797 digits. Both are orbax
  checkpoints under ``<cache_dir>/<cache_key(cfg)>/{split,full}``; a checkpoint that holds the
  finished run is restored instead of retrained (``info["resumed_from"]`` equals the step
  count), one that fails its checksum is set aside and retrained. Training runs in float32
  whatever ``jax_enable_x64`` says, so tests and the command line cache the same model.

  Args:
    cfg: a config of :func:`get_config` (default: ``get_config()``).
    cache_dir: overrides ``cfg.cache_dir``; ``""``/``None`` in both means
      :data:`DEFAULT_CACHE_DIR`.
    exclude: images (e.g. a generative model's TRAINING digits) left out of both training sets
      of the classifier, so that its features never saw them (``None``: all 1797 digits). The
      cache directory gets the hash of the excluded indices; ``info["num_excluded"]`` reports
      how many were dropped.

  Returns:
    :class:`DigitsClassifier` whose ``info`` holds ``heldout_accuracy`` (NaN without the split),
    ``num_heldout``, ``train_accuracy`` (the extractor on all digits, a training accuracy),
    ``steps``, ``resumed_from`` per stage, ``final_loss``, ``cache_dir`` and ``seconds``.
  """
  cfg = get_config() if cfg is None else cfg
  root = os.path.abspath(cache_dir or cfg.get("cache_dir", "") or DEFAULT_CACHE_DIR)
  run_dir = os.path.join(root, cache_key(cfg))
  module = DigitsMLP(hidden=tuple(cfg.model.hidden), feature_dim=cfg.model.feature_dim)
  x, y = data.load_digits(flatten=True)
  num_excluded = 0
  if exclude is not None:
    drop = excluded_indices(x, exclude)
    num_excluded = int(drop.size)
    tag = hashlib.sha256(drop.astype(np.int64).tobytes()).hexdigest()[:8]
    run_dir = f"{run_dir}-without-{tag}"
    keep = np.setdiff1d(np.arange(len(x)), drop)
    x, y = x[keep], y[keep]
  k_split, k_full = jax.random.split(jax.random.PRNGKey(cfg.seed))
  info = {
    "steps": int(cfg.train.steps),
    "cache_dir": run_dir,
    "resumed_from": {},
    "num_excluded": num_excluded,
  }
  start = time.perf_counter()
  with common.x64(False):
    if cfg.split.enabled:
      from sklearn.model_selection import train_test_split

      x_tr, x_ho, y_tr, y_ho = train_test_split(
        x, y, test_size=float(cfg.split.heldout_fraction), stratify=y, random_state=cfg.seed
      )
      p_split, _, resumed = _fit(cfg, module, x_tr, y_tr, k_split, os.path.join(run_dir, "split"))
      info["resumed_from"]["split"] = int(resumed)
      split_model = DigitsClassifier(module, p_split, {})
      info["heldout_accuracy"] = accuracy(split_model, x_ho, y_ho)
      info["num_heldout"] = int(len(y_ho))
    else:
      info["heldout_accuracy"], info["num_heldout"] = float("nan"), 0
    params, losses, resumed = _fit(cfg, module, x, y, k_full, os.path.join(run_dir, "full"))
    info["resumed_from"]["full"] = int(resumed)
    info["final_loss"] = float(np.nanmean(losses[-100:]))
    classifier = DigitsClassifier(module, params, info)
    info["train_accuracy"] = accuracy(classifier, x, y)
  info["seconds"] = time.perf_counter() - start
  return classifier


def quality_report(
  samples, reference, classifier: DigitsClassifier, *, k: int = 3, nn_distance=None
) -> dict:
  """Digits-FD, improved precision / recall and confidence of ``samples`` against ``reference``.

  Features are the classifier's penultimate layer (:func:`features`):
  ``digits_fd = FD(φ(samples), φ(reference))`` (:func:`memjax.metrics.frechet_distance`),
  ``precision`` / ``recall`` of :func:`memjax.metrics.precision_recall` with ``k`` (real set =
  ``reference``), ``confidence = mean max_c p(c | sample)`` and ``reference_confidence`` the
  same of the reference images. FD is biased upwards at small set sizes: compare values at equal
  ``len(samples)`` and beside real held-out digits of that size.

  Args:
    samples: generated images (:func:`as_images` formats), at least ``k + 1``.
    reference: real images, typically held-out digits, at least ``k + 1``.
    classifier: from :func:`load_classifier`.
    k: neighbourhood size of precision / recall.
    nn_distance: optional mean nearest-neighbour distance to held-out images computed by the
      caller (:mod:`experiments.laplace.images`); passed through as ``nn_distance``.

  Returns:
    Plain numbers: ``digits_fd``, ``precision``, ``recall``, ``confidence``,
    ``reference_confidence``, ``class_fractions`` (predicted-class histogram of the samples,
    10 entries), ``num_samples``, ``num_reference``, ``k`` and ``nn_distance`` when given.

  Raises:
    ValueError: on malformed or non-finite images, or too few of them for ``k``.
  """
  f_s, p_s = _features_and_probs(classifier, "samples", samples)
  f_r, p_r = _features_and_probs(classifier, "reference", reference)
  pr = metrics.precision_recall(f_r, f_s, k)
  pred = np.argmax(p_s, axis=1)
  out = {
    "digits_fd": metrics.frechet_distance(f_s, f_r),
    "precision": pr.precision,
    "recall": pr.recall,
    "confidence": confidence(p_s),
    "reference_confidence": confidence(p_r),
    "class_fractions": (np.bincount(pred, minlength=NUM_CLASSES) / len(pred)).tolist(),
    "num_samples": int(f_s.shape[0]),
    "num_reference": int(f_r.shape[0]),
    "k": int(k),
  }
  if nn_distance is not None:
    _refuse_nonfinite("nn_distance", np.asarray(nn_distance, np.float64))
    out["nn_distance"] = float(nn_distance)
  return out


# What each number rewards (results.json ``metric_notes``); for the experiments that report them.
METRIC_NOTES = {
  "digits_fd": "Fréchet distance between Gaussians fitted to the digits classifier's penultimate "
  "features of the samples and of held-out digits: low when the feature distribution (quality "
  "and diversity) matches; biased upwards at small set sizes, compare at equal sizes.",
  "precision": "improved precision (k-NN balls): fraction of samples inside the held-out digits' "
  "feature manifold, i.e. samples that look real.",
  "recall": "improved recall: fraction of held-out digits inside the samples' feature manifold, "
  "i.e. how much of the data the samples cover.",
  "confidence": "mean maximum class probability of the classifier on the samples (0.1 = "
  "unrecognisable); copies of training digits score like real digits.",
}


def _calibration(cfg, classifier) -> dict:
  """Metrics on known cases: real vs real, copies (of the reference, of a few other digits), noisy
  digits, pure noise, and the real-vs-real FD at several set sizes."""
  x, _ = data.load_digits(flatten=True)
  n = cfg.eval.num_samples
  perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(cfg.seed + 1), len(x)))
  reference, other = x[perm[:n]], x[perm[n : 2 * n]]
  rng = np.random.default_rng(cfg.seed)
  k = cfg.eval.k
  # A fully memorising generator: n draws (with replacement) of `num_memorised` digits outside
  # the reference set, as the MAP of a small training set produces.
  few = x[perm[2 * n : 2 * n + cfg.eval.num_memorised]]
  cases = {
    "copies_of_reference": reference,
    f"copies_of_{cfg.eval.num_memorised}_other_digits": few[rng.integers(0, len(few), n)],
    "uniform_noise": rng.uniform(-1.0, 1.0, other.shape).astype(np.float32),
  }
  for s in cfg.eval.noise_stds:
    cases[f"real_plus_noise_std_{s:g}"] = other + s * rng.normal(size=other.shape).astype(
      np.float32
    )
  start = time.perf_counter()
  out = {"heldout_real_vs_reference": quality_report(other, reference, classifier, k=k)}
  first = time.perf_counter() - start  # includes compiling for these shapes
  out.update(
    {name: quality_report(imgs, reference, classifier, k=k) for name, imgs in cases.items()}
  )
  warm = []
  for _ in range(3):
    start = time.perf_counter()
    quality_report(other, reference, classifier, k=k)
    warm.append(time.perf_counter() - start)
  floor = {}
  for m in cfg.eval.floor_sizes:
    if 2 * m > len(x):
      continue
    fds = []
    for r in range(cfg.eval.floor_repeats):
      p = np.asarray(jax.random.permutation(jax.random.PRNGKey(cfg.seed + 2 + r), len(x)))
      fds.append(
        metrics.frechet_distance(
          features(classifier, x[p[:m]]), features(classifier, x[p[m : 2 * m]])
        )
      )
    floor[str(m)] = common.stats(fds)
  return {
    "num_samples": n,
    "cases": out,
    "quality_report_seconds": {"first_call": first, "warm_median_of_3": float(np.median(warm))},
    "real_vs_real_fd_by_size": floor,
  }


def summarise(results: dict, workdir: str) -> str:
  """Accuracies, the calibration table and the timing, one line each."""
  info = results["classifier"]
  lines = [
    f"outputs: {workdir}",
    f"classifier: held-out accuracy {info['heldout_accuracy']:.4f} "
    f"({info['num_heldout']} digits), train accuracy (all digits) {info['train_accuracy']:.4f}; "
    f"cache {info['cache_dir']} (resumed {info['resumed_from']})",
  ]
  cal = results["calibration"]
  for name, r in cal["cases"].items():
    lines.append(
      f"{name}: digits-FD {r['digits_fd']:.4g}, P {r['precision']:.3f}, R {r['recall']:.3f}, "
      f"confidence {r['confidence']:.3f}"
    )
  sec = cal["quality_report_seconds"]
  lines.append(
    f"quality_report on {cal['num_samples']} samples: {sec['first_call']:.3f}s first call, "
    f"{sec['warm_median_of_3']:.3f}s warm (median of 3)"
  )
  floor = cal["real_vs_real_fd_by_size"].items()
  lines.append(
    "real-vs-real digits-FD by set size: "
    + ", ".join(f"{m}: {v['mean']:.3g} ± {v['std']:.2g}" for m, v in floor)
  )
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """Train or load the classifier, calibrate the metrics on known cases, write results.json.

  Args:
    cfg: a config of :func:`get_config`.
    workdir: the output directory.

  Returns:
    ``{"config", "metric_notes", "classifier", "calibration"}`` as written to results.json.
  """
  os.makedirs(workdir, exist_ok=True)
  classifier = load_classifier(cfg)
  results = {
    "config": cfg.to_dict(),
    "metric_notes": METRIC_NOTES,
    "classifier": classifier.info,
    "calibration": _calibration(cfg, classifier),
  }
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
