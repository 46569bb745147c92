r"""The memorisation–quality frontier of Euclidean, Riemannian and linearised Laplace on digits.

One flow-matching UNet MAP (trained once, orbax-cached; the images experiment's model and data),
then for each of ``cfg.frontier.num_seeds`` posterior seeds (new frozen triples, Lanczos start and
tangent draws; same training, same generation noise: model s of every sampler generates from x0[s]):
the tangent Gaussian with α chosen by
``cfg.posterior.alpha_rule`` (default: the Laplace evidence), and for every sampler an η grid
extended ×``eta_ratio`` until its M_1/3 falls below ``stop_m`` or more than ``max_fail`` of its
samples fail (geodesic step budget) or ``eta_max``. Every cell generates images from the fixed
x0 with each kept posterior model and reports M_c (c ∈ the papers' grid) and the quality metrics
of :mod:`experiments.laplace.quality` (digits-FD to held-out digits, improved precision/recall,
classifier confidence) beside the NN distance and the held-out FM loss::

  python -m experiments.laplace.frontier --config=experiments/laplace/configs/frontier.py

The frontier of a method is its (FD, M_c) path through its cells in η order from the MAP,
interpolated linearly (:func:`envelope`; ``frontier.envelope = "step"`` gives the issue-16 lower
step envelope, biased towards the denser grid); two methods are compared by the mean gap
``f_E(q) − f_R(q)`` over the common FD range (positive: Riemannian memorises less at equal
quality), with a PAIRED bootstrap CI over seeds and generation noises (:func:`bootstrap_gap`).
The common range is compared with the FD noise floor (:func:`fd_noise_floor`: FD between disjoint
real held-out sets of the frontier's size); inside it the verdict is "no equal-quality
comparison". Also the "single" mode (top eigenvector only), for the sink effect.
"""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import tqdm
from absl import logging

from experiments import common, plotting
from experiments.laplace import pipeline, posterior_cells, quality
from memjax import laplace, memorisation, metrics

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "frontier.py")
FIGURES = ("frontier.png", "frontier_eta.png")

METRIC_NOTES = {
  "digits_fd": "Fréchet distance between Gaussians fitted to the digits classifier's penultimate "
  "features of the generated images and of the held-out digits (lower = closer to real digits); "
  "biased upwards at small set sizes, so compare at equal num_images and against "
  "reference.heldout_subset_fd (real held-out digits of the same size).",
  "precision_recall": "improved precision (generated images inside the k-NN balls of real "
  "features) and recall (real inside generated), k = quality.k.",
  "memorisation": "M_c = fraction of generated images with d1^2 <= c d2^2 to the training images.",
  "frontier_gap": "mean over the common digits-FD range of f_A(q) - f_B(q), f = M_c along the "
  "piecewise-linear (FD, M_c) path of the cells in eta order from the MAP (frontier.envelope = "
  "'path'; 'step' = lower step envelope); > 0: B memorises less than A at equal quality; CI by a "
  "paired bootstrap over seeds and generation noises.",
  "fd_noise_floor": "digits-FD between two disjoint random sets of real held-out digits of the "
  "frontier's size n (mean, sd over repeats): a common FD range narrower than its mean is not "
  "an equal-quality comparison.",
}


def grid(cfg_f, name: str = "euclidean"):
  """The η grid of sampler ``name``: ``eta_start · ratio^i`` up to ``eta_max``, with ratio
  ``eta_ratio`` (``eta_ratio_geodesic`` and ``eta_max_geodesic`` for the geodesic samplers, whose
  cells cost far more)."""
  ratio, top = cfg_f.eta_ratio, cfg_f.eta_max
  if name in pipeline.GEODESIC_SAMPLERS:
    ratio = cfg_f.get("eta_ratio_geodesic", ratio)
    top = cfg_f.get("eta_max_geodesic", top)
  etas, eta = [], float(cfg_f.eta_start)
  while eta <= top * (1 + 1e-9):
    etas.append(eta)
    eta *= ratio
  return etas


ENVELOPES = ("path", "step")


def envelope(points, qs, kind: str = "path"):
  """The frontier ``f(q)`` (M_c at digits-FD ``q``) of one method's cells, at ``qs`` (nan outside).

  ``points`` is ``[(fd, m)]`` in η order, the MAP first (:func:`points_of`).

  * ``"path"`` (default): the piecewise-linear path through the cells in η order; ``f(q)`` is M_c
    where the path FIRST reaches FD ``q`` (linear interpolation inside the segment), nan outside
    the path's FD range. Two methods on the same true trade-off curve get the same ``f`` whatever
    their grids (no minimum over noisy cells, which favours the method with more cells).
  * ``"step"``: the lower envelope ``min{M : FD ≤ q}`` of the cells (the issue-16 estimator; it
    is biased towards the method with the denser grid, kept for comparison).
  """
  if kind not in ENVELOPES:
    raise ValueError(f"`kind` must be one of {ENVELOPES}; got {kind!r}.")
  qs = np.asarray(qs, float)
  if kind == "step":
    pts = sorted(points)
    fd = np.asarray([p[0] for p in pts])
    m = np.minimum.accumulate(np.asarray([p[1] for p in pts]))
    idx = np.searchsorted(fd, qs, side="right") - 1
    return np.where(idx >= 0, m[np.clip(idx, 0, None)], np.nan)
  fd = np.asarray([p[0] for p in points], float)
  m = np.asarray([p[1] for p in points], float)
  out = np.full(qs.shape, np.nan)
  if len(fd) == 1:
    return np.where(qs == fd[0], m[0], out)
  for i in range(len(fd) - 2, -1, -1):  # backwards: the first crossing along the path wins
    f0, f1 = fd[i], fd[i + 1]
    inside = (qs >= min(f0, f1)) & (qs <= max(f0, f1))
    w = np.where(f1 != f0, (qs - f0) / np.where(f1 != f0, f1 - f0, 1.0), 0.0)
    out = np.where(inside, m[i] + w * (m[i + 1] - m[i]), out)
  return out


def frontier_gap(points_a, points_b, num: int = 200, kind: str = "path"):
  """Mean ``f_A − f_B`` over the common FD range of two point sets (``None`` if it is empty).

  The range is ``[max(min FD), min(max FD)]`` of the two sets; a method that never leaves the
  MAP's quality has a degenerate range and no gap (reported as such, not as 0). ``kind``: the
  envelope (:func:`envelope`).
  """
  lo = max(min(p[0] for p in points_a), min(p[0] for p in points_b))
  hi = min(max(p[0] for p in points_a), max(p[0] for p in points_b))
  if not hi > lo:
    return None, (lo, hi)
  qs = np.linspace(lo, hi, num)
  gap = envelope(points_a, qs, kind) - envelope(points_b, qs, kind)
  return float(np.mean(gap)), (float(lo), float(hi))


def _resampled_point(cd, counts, c, held_feats):
  """(FD, M_c) of one cell with its images taken ``counts[id]`` times (the paired draw)."""
  idx = np.repeat(np.arange(len(cd.r)), counts[cd.ids])
  if len(idx) < 2:
    return None
  fd = metrics.frechet_distance(cd.feats[idx], held_feats)
  return fd, float(np.mean(cd.r[idx] <= c))


def bootstrap_gap(
  per_seed,
  name_a,
  name_b,
  c,
  held_feats,
  num: int,
  seed: int,
  kind: str = "path",
  max_no_common: float = 0.5,
):
  """PAIRED bootstrap CI of the seed-averaged frontier gap.

  ``per_seed[s][name]`` is the list of :class:`~experiments.laplace.posterior_cells.CellData` of
  method ``name`` on seed ``s`` in η order, the MAP cell first (the SAME object for both methods).
  One replicate resamples the seeds with replacement and, for each drawn seed, the generation
  noises ``x0[s, n]`` once (multinomial counts over the noise ids); that one draw is applied to
  every cell of BOTH methods, the shared MAP cell included. The pairing of the design (same MAP,
  same noise per model slot) is kept, so what the CI measures is the noise of the difference.

  A replicate whose drawn seeds have no common digits-FD range at all is counted
  (``num_no_common``), never silently dropped; with more than ``max_no_common`` of them, or when
  the un-resampled data already have no common range (a method that never leaves the MAP), there
  is no CI (``ci95 = None`` with a ``reason``).

  Returns:
    dict with ``mean`` and ``ci95`` (percentile, 2.5/97.5) over the replicates with a gap (or
    ``None``), ``num`` (replicates with a gap), ``num_replicates``, ``num_no_common``,
    ``seed_draws_without_range``, ``paired`` (True), ``envelope`` and ``reason`` (or ``None``).
  """
  rng = np.random.default_rng(seed)
  seeds = sorted(per_seed)
  base = {"num_replicates": int(num), "paired": True, "envelope": kind}

  def point(cd, counts, cache, held):
    key = id(cd)
    if key not in cache:
      cache[key] = _resampled_point(cd, counts, c, held)
    return cache[key]

  def seed_gap(s, counts):
    cache = {}
    pts = []
    for name in (name_a, name_b):
      p = [point(cd, counts, cache, held_feats) for cd in per_seed[s][name]]
      pts.append([q for q in p if q is not None])
    if not pts[0] or not pts[1]:
      return None
    return frontier_gap(pts[0], pts[1], kind=kind)[0]

  def num_ids(s):
    return 1 + max(int(cd.ids.max()) for n in (name_a, name_b) for cd in per_seed[s][n])

  ids = {s: num_ids(s) for s in seeds}
  full = [seed_gap(s, np.ones(ids[s], np.int64)) for s in seeds]
  if all(g is None for g in full):
    return {
      **base,
      "mean": None,
      "ci95": None,
      "num": 0,
      "num_no_common": int(num),
      "seed_draws_without_range": int(num) * len(seeds),
      "reason": "no seed has a common digits-FD range (a method never leaves the MAP's quality)",
    }
  gaps, no_common, missing = [], 0, 0
  for _ in range(num):
    vals = []
    for s in rng.choice(seeds, len(seeds), replace=True):
      counts = rng.multinomial(ids[s], np.full(ids[s], 1.0 / ids[s]))
      g = seed_gap(s, counts)
      if g is None:
        missing += 1
      else:
        vals.append(g)
    if vals:
      gaps.append(float(np.mean(vals)))
    else:
      no_common += 1
  out = {
    **base,
    "num": len(gaps),
    "num_no_common": no_common,
    "seed_draws_without_range": missing,
    "reason": None,
  }
  if not gaps or no_common > max_no_common * num:
    return {
      **out,
      "mean": None,
      "ci95": None,
      "reason": f"no common digits-FD range in {no_common} of {num} replicates",
    }
  return {
    **out,
    "mean": float(np.mean(gaps)),
    "ci95": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))],
  }


def fd_noise_floor(feats, n: int, repeats: int, seed: int) -> dict:
  """FD between two DISJOINT random sets of ``n`` real images each (features ``feats``), repeated.

  Two sets from the same distribution at the frontier's set size ``n`` are this far apart in
  digits-FD by sampling alone: a common FD range narrower than that cannot be read as a quality
  axis (:func:`verdict`). Also reported: the FD of one random ``n``-subset to ALL of ``feats``
  (``vs_reference``), the quantity a frontier cell measures, whose spread is the sampling noise
  of one cell's FD.

  Args:
    feats: real held-out features ``(N, F)``, ``N ≥ 2n``.
    n: set size (the frontier's images per cell).
    repeats: number of random disjoint pairs.
    seed: numpy seed.

  Returns:
    dict ``n``, ``repeats``, ``mean``, ``sd`` (ddof 1; 0 for one repeat), ``values`` of the
    disjoint pairs, and ``vs_reference`` ``{mean, sd}`` (the first set of each pair against
    ``feats``).

  Raises:
    ValueError: if ``n < 2``, ``2n > N`` or ``repeats < 1``.
  """
  feats = np.asarray(feats)
  if not (isinstance(n, (int, np.integer)) and 2 <= n and 2 * n <= len(feats)):
    raise ValueError(f"`n` must be an int in [2, N/2] with N = {len(feats)}; got {n!r}.")
  if not (isinstance(repeats, (int, np.integer)) and repeats >= 1):
    raise ValueError(f"`repeats` must be a positive int; got {repeats!r}.")
  rng = np.random.default_rng(seed)
  vals, ref = [], []
  for _ in range(repeats):
    perm = rng.permutation(len(feats))
    vals.append(metrics.frechet_distance(feats[perm[:n]], feats[perm[n : 2 * n]]))
    ref.append(metrics.frechet_distance(feats[perm[:n]], feats))
  vals, ref = np.asarray(vals), np.asarray(ref)
  sd = lambda x: float(x.std(ddof=1)) if repeats > 1 else 0.0
  return {
    "n": int(n),
    "repeats": int(repeats),
    "mean": float(vals.mean()),
    "sd": sd(vals),
    "values": vals.tolist(),
    "vs_reference": {"mean": float(ref.mean()), "sd": sd(ref)},
  }


def _widths(fd_ranges):
  return [r1 - r0 for r0, r1 in fd_ranges if r1 > r0]


def inside_fd_floor(fd_ranges, fd_floor) -> bool:
  """True when the mean width of the common digits-FD ranges is not above the FD noise floor's
  mean (:func:`fd_noise_floor`): the range is inside FD's own sampling noise."""
  widths = _widths(fd_ranges)
  return bool(fd_floor is not None and widths and np.mean(widths) <= fd_floor["mean"])


def outcome(gap, ci, inside_floor: bool) -> str:
  """The reading rule of a gap ``M_a − M_b``, one code for :func:`verdict` and
  :func:`verdict_word`: ``"no_range"`` (no common FD range), ``"inside_floor"``, ``"no_ci"``,
  ``"b"`` (CI above 0: ``b`` dominates), ``"a"`` (CI below 0) or ``"neither"``."""
  if gap is None:
    return "no_range"
  if inside_floor:
    return "inside_floor"
  if ci is None or ci.get("ci95") is None:
    return "no_ci"
  lo, hi = ci["ci95"]
  return "b" if lo > 0 else "a" if hi < 0 else "neither"


def verdict(a: str, b: str, c: float, gap, ci, fd_ranges=(), fd_floor=None) -> str:
  """One sentence: does ``b`` memorise less than ``a`` at equal digits-FD, and by how much.

  ``fd_ranges``: the per-seed common digits-FD ranges the gap averages over (printed, so that a
  gap of 0 over a range no wider than the MAP's own quality is not read as a tie across quality).
  ``fd_floor``: :func:`fd_noise_floor`; when the mean width of the common ranges is not above its
  mean, the verdict is "no equal-quality comparison" (the range is inside FD's sampling noise),
  whatever the gap.
  """
  kind = outcome(gap, ci, inside_fd_floor(fd_ranges, fd_floor))
  if kind == "no_range":
    return (
      f"c={c:g}: no common digits-FD range between {a} and {b} (one of them never leaves the "
      "MAP's quality): no equal-quality comparison is possible."
    )
  spans = "; ".join(f"[{r0:.1f}, {r1:.1f}]" for r0, r1 in fd_ranges if r1 > r0)
  over = f" (common range {spans})" if spans else ""
  if kind == "inside_floor":
    return (
      f"c={c:g}: no equal-quality comparison between {a} and {b}: the common digits-FD range"
      f"{over} is {np.mean(_widths(fd_ranges)):.2f} wide on average, inside the FD noise floor "
      f"{fd_floor['mean']:.2f} ± {fd_floor['sd']:.2f} (disjoint real sets of n = "
      f"{fd_floor['n']}); gap M_{a} − M_{b} = {gap:+.3f} is not an equal-quality difference."
    )
  if kind == "no_ci":
    why = "" if ci is None else f" ({ci.get('reason')})"
    return (
      f"c={c:g}: mean gap M_{a} − M_{b} = {gap:+.3f} at equal digits-FD{over}, but no "
      f"bootstrap CI{why}: no verdict."
    )
  lo, hi = ci["ci95"]
  word = {
    "b": f"{b} dominates {a}",
    "a": f"{a} dominates {b}",
    "neither": f"neither dominates (the CI contains 0) between {a} and {b}",
  }[kind]
  extra = ""
  if ci.get("num_no_common"):
    extra = f"; no common range in {ci['num_no_common']} of {ci['num_replicates']} replicates"
  return (
    f"c={c:g}: {word} at equal digits-FD{over}: mean gap M_{a} − M_{b} = {gap:+.3f} "
    f"(paired bootstrap 95% CI [{lo:+.3f}, {hi:+.3f}]{extra})."
  )


def sweep_method(fit, ev, cfg, name, k_v, x0, classifier, held, mode="subspace"):
  """One sampler's cells along the η grid with the stopping rules of ``cfg.frontier``."""
  fc, pc = cfg.frontier, cfg.posterior
  options = pipeline.sampler_options(pc)
  index = 0 if mode == "single" else None
  c = cfg.eval.headline_c
  etas = list(fc.single_etas) if mode == "single" else grid(fc, name)
  cells, data = [], []
  for eta in tqdm.tqdm(etas, desc=f"{name} ({mode})", disable=not cfg.progress, leave=False):
    with common.Timer() as t:
      _, out = jax.block_until_ready(
        laplace.posterior_samples(
          fit,
          jnp.asarray(eta, fit.theta_map.dtype),
          k_v,
          pc.num_posterior,
          samplers=(name,),
          mode=mode,
          index=index,
          options=options,
        )
      )
    smp = out[name]
    diag = pipeline.sampler_diagnostics(fit, smp)
    ok = np.asarray(smp.success)
    cell = {"eta": float(eta), "sampling": diag, "sampling_seconds": t.seconds}
    if ok.sum() == 0:
      cell["stopped"] = "all samples failed"
      cells.append(cell)
      break
    with common.Timer() as t_eval:
      numbers, cd = posterior_cells.evaluate_cell(
        ev, smp.theta, ok, x0, classifier, held, cfg.quality.k
      )
    cell.update(numbers, eval_seconds=t_eval.seconds)
    cells.append(cell)
    data.append(cd)
    logging.info(
      "%s eta=%g: %s %.3f, FD %.3f, failed %d/%d (%.1fs)",
      name,
      eta,
      pipeline.m_label(c),
      posterior_cells.m_of(cell, c),
      cell["digits_fd"],
      diag["failed"],
      diag["total"],
      t.seconds,
    )
    if mode == "single":
      continue
    if posterior_cells.m_of(cell, c) < fc.stop_m:
      cell["stopped"] = f"{pipeline.m_label(c)} < {fc.stop_m}"
      break
    if diag["failed"] > fc.max_fail * diag["total"]:
      cell["stopped"] = f"more than {fc.max_fail:.0%} of the samples failed"
      break
  return cells, data


def run_seed(cfg, u, params, train, held, seed, k_post, k_sweep, x0, classifier, dtype):
  """The fit and every sampler's cells for one posterior seed."""
  keys = pipeline.draw_keys(jax.random.fold_in(k_post, seed), 0)
  keys = keys[:2] + (jax.random.fold_in(k_post, 10_000),)  # same held-out triples for every seed
  fit, ev, info = pipeline.fit_posterior(
    u, params, train, held, keys, cfg.posterior, cfg.eval, dtype
  )
  # The linearised sampler's tangent Gaussian from the GGN (posterior.curvature = "ggn").
  fits = pipeline.sampler_fits(fit, cfg.posterior, jax.random.fold_in(keys[1], 3))
  if fits.get("linearised", fit) is not fit:
    info["ggn_ritz_values"] = np.asarray(fits["linearised"].eig.values)
    info["ggn_ritz_residuals"] = np.asarray(fits["linearised"].eig.residuals)
  info["curvature_linearised"] = cfg.posterior.get("curvature", "hessian")
  k_v = jax.random.fold_in(k_sweep, seed)
  every = np.ones(cfg.posterior.num_posterior, bool)
  stack = jnp.broadcast_to(fit.theta_map, (cfg.posterior.num_posterior,) + fit.theta_map.shape)
  map_cell, map_data = posterior_cells.evaluate_cell(
    ev, stack, every, x0, classifier, held, cfg.quality.k
  )
  methods, data = {}, {}
  for name in cfg.posterior.samplers:
    with common.Timer() as t:
      cells, cds = sweep_method(fits[name], ev, cfg, name, k_v, x0, classifier, held)
    methods[name] = {"cells": cells, "seconds": t.seconds}
    data[name] = [map_data] + cds
  single = {}
  for name in cfg.frontier.single_samplers if seed < cfg.frontier.single_seeds else ():
    cells, _ = sweep_method(
      fits.get(name, fit), ev, cfg, name, k_v, x0, classifier, held, mode="single"
    )
    single[name] = cells
  return {"seed": seed, "fit": info, "map": map_cell, "methods": methods, "single": single}, data


def points_of(seed_row, name, c):
  pts = [(seed_row["map"]["digits_fd"], posterior_cells.m_of(seed_row["map"], c))]
  pts += [
    (cl["digits_fd"], posterior_cells.m_of(cl, c))
    for cl in seed_row["methods"][name]["cells"]
    if "digits_fd" in cl
  ]
  return pts


def compare(rows, data, cfg, held_feats, fd_floor=None):
  """Per c and pair of samplers: seed-mean frontier gap, its paired bootstrap CI, the verdict."""
  kind = cfg.frontier.get("envelope", "path")
  names = tuple(cfg.posterior.samplers)
  pairs = [(a, b) for a in names for b in names if a == "euclidean" and b != a]
  pairs += [(a, b) for a in names for b in names if a == "riemannian" and b == "linearised"]
  out = {}
  for c in cfg.frontier.cs:
    for a, b in pairs:
      gaps = []
      ranges = []
      for row in rows:
        g, rng = frontier_gap(points_of(row, a, c), points_of(row, b, c), kind=kind)
        ranges.append(rng)
        if g is not None:
          gaps.append(g)
      gap = float(np.mean(gaps)) if gaps else None
      per_seed = {row["seed"]: {a: data[row["seed"]][a], b: data[row["seed"]][b]} for row in rows}
      ci = (
        bootstrap_gap(per_seed, a, b, c, held_feats, cfg.frontier.bootstrap, cfg.seed, kind)
        if gaps
        else None
      )
      out[f"{a}_vs_{b}@{memorisation.c_label(c)}"] = {
        "c": c,
        "gap_mean": gap,
        "gap_per_seed": gaps,
        "fd_ranges": ranges,
        "bootstrap": ci,
        "fd_range_width_mean": float(np.mean(_widths(ranges))) if _widths(ranges) else 0.0,
        "inside_fd_noise_floor": inside_fd_floor(ranges, fd_floor),
        "verdict": verdict(a, b, c, gap, ci, ranges, fd_floor),
      }
  return out


def verdict_word(v: dict, a: str, b: str) -> str:
  """The short verdict of one :func:`compare` entry for the pair ``(a, b)``: ``"a dominates"``,
  ``"b dominates"``, ``"neither (CI contains 0)"``, ``"no equal-quality comparison"`` (no common
  range, or one inside the FD noise floor) or ``"no CI"`` (:func:`outcome`)."""
  kind = outcome(v["gap_mean"], v["bootstrap"], v["inside_fd_noise_floor"])
  return {
    "no_range": "no equal-quality comparison",
    "inside_floor": "no equal-quality comparison",
    "no_ci": "no CI",
    "a": f"{a} dominates",
    "b": f"{b} dominates",
    "neither": "neither (CI contains 0)",
  }[kind]


def verdict_table(runs: dict) -> str:
  """A Markdown table of the restated verdict over several frontier runs.

  ``runs``: ``{label: results}`` (label e.g. ``"first layer, mean"``; results of :func:`run`).
  One row per run, pair of samplers and c: seeds, the seed-mean gap, its paired bootstrap 95 %
  CI, the mean width of the common digits-FD ranges against the FD noise floor, the verdict.
  """
  lines = [
    "| run | pair (A − B) | c | seeds | gap M_A − M_B | paired 95 % CI | common FD range "
    "(mean width) | FD noise floor | verdict |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for label, res in runs.items():
    floor = res["reference"]["fd_noise_floor"]
    for key, v in res["comparison"].items():
      pair = key.split("@")[0].split("_vs_")
      ci = (v["bootstrap"] or {}).get("ci95")
      gap = "–" if v["gap_mean"] is None else f"{v['gap_mean']:+.3f}"
      lines.append(
        f"| {label} | {pair[0]} − {pair[1]} | {v['c']:.3g} | {len(res['seeds'])} | {gap} | "
        + ("–" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
        + f" | {v['fd_range_width_mean']:.2f} | {floor['mean']:.1f} ± {floor['sd']:.1f} | "
        f"{verdict_word(v, *pair)} |"
      )
  return "\n".join(lines)


def reach(rows, names, c):
  """Per sampler: the lowest M_c reached (mean over seeds) and the digits-FD / η there."""
  out = {}
  for name in names:
    best = []
    for row in rows:
      cells = [cl for cl in row["methods"][name]["cells"] if "digits_fd" in cl]
      if cells:
        cl = min(cells, key=lambda x: (posterior_cells.m_of(x, c), x["digits_fd"]))
        best.append((posterior_cells.m_of(cl, c), cl["digits_fd"], cl["eta"]))
    if best:
      arr = np.asarray(best)
      out[name] = {
        "min_M": float(arr[:, 0].mean()),
        "fd": float(arr[:, 1].mean()),
        "eta": list(arr[:, 2]),
      }
  return out


def plot_frontier(path, rows, names, cs, reference_fd, kind="path"):
  fig, axes = plt.subplots(1, len(cs), figsize=(5 * len(cs), 4), squeeze=False)
  colours = dict(zip(names, ("C0", "C3", "C2", "C1")))
  for a, c in zip(axes[0], cs):
    for name in names:
      fds = [p[0] for row in rows for p in points_of(row, name, c)]
      lo, hi = min(fds), max(fds)
      qs = np.linspace(lo, hi, 200)
      curves = np.stack([envelope(points_of(row, name, c), qs, kind) for row in rows])
      with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nan outside a seed's FD range
        mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
      a.plot(qs, mean, color=colours[name], label=name)
      a.fill_between(qs, low, high, color=colours[name], alpha=0.2)
      for row in rows:
        pts = points_of(row, name, c)
        a.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=colours[name], ms=4)
    a.axvline(reference_fd, color="k", ls=":", lw=1, label="held-out digits (same n)")
    a.set(
      xlabel="digits-FD to held-out digits (quality cost →)",
      ylabel=f"M_{c:.3g}",
      title=f"c = {c:.3g}",
    )
  axes[0][0].legend(fontsize=8)
  plotting.save(fig, path, dpi=100)


def plot_eta(path, rows, names, c):
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  colours = dict(zip(names, ("C0", "C3", "C2", "C1")))
  for name in names:
    for i, row in enumerate(rows):
      cells = [cl for cl in row["methods"][name]["cells"] if "digits_fd" in cl]
      eta = [cl["eta"] for cl in cells]
      kw = dict(color=colours[name], label=name if i == 0 else None)
      axes[0].plot(eta, [posterior_cells.m_of(cl, c) for cl in cells], "o-", **kw)
      axes[1].plot(eta, [cl["digits_fd"] for cl in cells], "o-", **kw)
  for a, t in zip(axes, (pipeline.m_label(c), "digits-FD")):
    a.set(xscale="log", xlabel="η (posterior standard deviations)", title=t)
  axes[0].legend(fontsize=8)
  plotting.save(fig, path, dpi=100)


def summarise(results: dict, workdir: str) -> str:
  c = pipeline.headline_c(results)
  label = pipeline.m_label(c)
  floor = results["reference"]["fd_noise_floor"]
  lines = [
    f"outputs: {workdir}",
    f"train {results['train_seconds']:.0f}s, frontier {results['frontier_seconds']:.0f}s; "
    f"held-out digits FD (same n) {results['reference']['heldout_subset_fd']:.3f}; FD noise "
    f"floor (disjoint real sets, n = {floor['n']}) {floor['mean']:.3f} ± {floor['sd']:.3f}; one "
    f"real n-set to the reference {floor['vs_reference']['mean']:.3f} ± "
    f"{floor['vs_reference']['sd']:.3f}",
  ]
  for row in results["seeds"]:
    f = row["fit"]
    lines.append(
      f"seed {row['seed']}: alpha {f['alpha_rule']} -> {row['alpha']:.4g}; MAP {label} "
      f"{posterior_cells.m_of(row['map'], c):.3f}, FD {row['map']['digits_fd']:.3f}; cells "
      + ", ".join(f"{n} {len(m['cells'])}" for n, m in row["methods"].items())
    )
  for name, r in results["reach"].items():
    lines.append(f"{name}: lowest {label} {r['min_M']:.3f} at FD {r['fd']:.3f} (η {r['eta']})")
  lines += [v["verdict"] for v in results["comparison"].values()]
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """MAP → per seed: fit, α, every sampler's η grid → frontiers, gaps, bootstrap, figures."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(cfg.x64):
    dtype = jnp.float64 if cfg.x64 else jnp.float32
    st = posterior_cells.setup(cfg, workdir, dtype)
    train, held, classifier = st.train, st.held, st.classifier
    held_feats = quality.features(classifier, held)
    n_ref = cfg.posterior.num_posterior * cfg.eval.num_gen
    sub = held[np.random.default_rng(cfg.seed).permutation(len(held))[: min(n_ref, len(held))]]
    fc = cfg.frontier
    reference = {
      "heldout_subset_fd": metrics.frechet_distance(quality.features(classifier, sub), held_feats),
      "fd_noise_floor": fd_noise_floor(
        held_feats, min(n_ref, len(held_feats) // 2), fc.get("fd_floor_repeats", 20), cfg.seed
      ),
      "train_images": quality.quality_report(train, held, classifier, k=cfg.quality.k),
      "classifier": {k: v for k, v in classifier.info.items() if not isinstance(v, dict)},
    }
    rows, data = [], {}
    with common.Timer() as t_front:
      for seed in tqdm.trange(
        cfg.frontier.num_seeds, desc="posterior seeds", disable=not cfg.progress
      ):
        row, d = run_seed(
          cfg, st.u, st.params, train, held, seed, st.k_post, st.k_sweep, st.x0, classifier, dtype
        )
        row["alpha"] = row["fit"]["alpha"]
        rows.append(row)
        data[seed] = d
    names = tuple(cfg.posterior.samplers)
    results = {
      "config": cfg.to_dict(),
      "metric_notes": METRIC_NOTES,
      "checkpoint_dir": st.ckpt,
      "train_seconds": st.train_seconds,
      "resumed_from_step": st.train_result.resumed_from,
      "frontier_seconds": t_front.seconds,
      "reference": reference,
      "seeds": rows,
      "reach": reach(rows, names, cfg.eval.headline_c),
      "comparison": compare(rows, data, cfg, held_feats, reference["fd_noise_floor"]),
    }
    plot_frontier(
      os.path.join(workdir, FIGURES[0]),
      rows,
      names,
      cfg.frontier.cs,
      reference["heldout_subset_fd"],
      fc.get("envelope", "path"),
    )
    plot_eta(os.path.join(workdir, FIGURES[1]), rows, names, cfg.eval.headline_c)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
