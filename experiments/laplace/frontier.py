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

The frontier of a method is the lower envelope ``f(q) = min{M_c : digits-FD ≤ q}`` of its cells
(MAP included); two methods are compared by the mean gap ``f_E(q) − f_R(q)`` over the common FD
range (positive: Riemannian memorises less at equal quality), with a bootstrap CI over seeds and
generated images. Also the "single" mode (top eigenvector only), for the sink effect.
"""

from __future__ import annotations

import os

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
  "frontier_gap": "mean over the common digits-FD range of f_A(q) - f_B(q), f = lower envelope of "
  "M_c against digits-FD (MAP included); > 0: B memorises less than A at equal quality.",
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


def envelope(points, qs):
  """Lower envelope ``f(q) = min{M : FD ≤ q}`` of ``points [(fd, m)]`` at ``qs`` (nan below)."""
  pts = sorted(points)
  fd = np.asarray([p[0] for p in pts])
  m = np.minimum.accumulate(np.asarray([p[1] for p in pts]))
  idx = np.searchsorted(fd, qs, side="right") - 1
  return np.where(idx >= 0, m[np.clip(idx, 0, None)], np.nan)


def frontier_gap(points_a, points_b, num: int = 200):
  """Mean ``f_A − f_B`` over the common FD range of two point sets (``None`` if it is empty).

  The range is ``[max(min FD), min(max FD)]`` of the two sets; a method that never leaves the
  MAP's quality has a degenerate range and no gap (reported as such, not as 0).
  """
  lo = max(min(p[0] for p in points_a), min(p[0] for p in points_b))
  hi = min(max(p[0] for p in points_a), max(p[0] for p in points_b))
  if not hi > lo:
    return None, (lo, hi)
  qs = np.linspace(lo, hi, num)
  return float(np.mean(envelope(points_a, qs) - envelope(points_b, qs))), (float(lo), float(hi))


def _resample_points(cells, c, rng, held_feats):
  """Bootstrap one method/seed: resample each cell's images, recompute (FD, M_c)."""
  out = []
  for cd in cells:
    i = rng.integers(0, len(cd.r), len(cd.r))
    fd = metrics.frechet_distance(cd.feats[i], held_feats)
    out.append((fd, float(np.mean(cd.r[i] <= c))))
  return out


def bootstrap_gap(per_seed, name_a, name_b, c, held_feats, num: int, seed: int):
  """Percentile CI of the seed-averaged gap: seeds and each cell's images resampled."""
  rng = np.random.default_rng(seed)
  seeds = list(per_seed)
  gaps = []
  for _ in range(num):
    vals = []
    for s in rng.choice(seeds, len(seeds), replace=True):
      a = _resample_points(per_seed[s][name_a], c, rng, held_feats)
      b = _resample_points(per_seed[s][name_b], c, rng, held_feats)
      g, _ = frontier_gap(a, b)
      if g is not None:
        vals.append(g)
    if vals:
      gaps.append(np.mean(vals))
  if not gaps:
    return None
  return {
    "mean": float(np.mean(gaps)),
    "ci95": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))],
    "num": len(gaps),
  }


def verdict(a: str, b: str, c: float, gap, ci, fd_ranges=()) -> str:
  """One sentence: does ``b`` memorise less than ``a`` at equal digits-FD, and by how much.

  ``fd_ranges``: the per-seed common digits-FD ranges the gap averages over (printed, so that a
  gap of 0 over a range no wider than the MAP's own quality is not read as a tie across quality).
  """
  if gap is None or ci is None:
    return (
      f"c={c:g}: no common digits-FD range between {a} and {b} (one of them never leaves the "
      "MAP's quality): no equal-quality comparison is possible."
    )
  lo, hi = ci["ci95"]
  if lo > 0:
    word = f"{b} dominates {a}"
  elif hi < 0:
    word = f"{a} dominates {b}"
  else:
    word = f"neither dominates (the CI contains 0) between {a} and {b}"
  spans = "; ".join(f"[{r0:.1f}, {r1:.1f}]" for r0, r1 in fd_ranges if r1 > r0)
  over = f" (common range {spans})" if spans else ""
  return (
    f"c={c:g}: {word} at equal digits-FD{over}: mean gap M_{a} − M_{b} = {gap:+.3f} "
    f"(bootstrap 95% CI [{lo:+.3f}, {hi:+.3f}])."
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
  k_v = jax.random.fold_in(k_sweep, seed)
  every = np.ones(cfg.posterior.num_posterior, bool)
  stack = jnp.broadcast_to(fit.theta_map, (cfg.posterior.num_posterior,) + fit.theta_map.shape)
  map_cell, map_data = posterior_cells.evaluate_cell(
    ev, stack, every, x0, classifier, held, cfg.quality.k
  )
  methods, data = {}, {}
  for name in cfg.posterior.samplers:
    with common.Timer() as t:
      cells, cds = sweep_method(fit, ev, cfg, name, k_v, x0, classifier, held)
    methods[name] = {"cells": cells, "seconds": t.seconds}
    data[name] = [map_data] + cds
  single = {}
  for name in cfg.frontier.single_samplers if seed < cfg.frontier.single_seeds else ():
    cells, _ = sweep_method(fit, ev, cfg, name, k_v, x0, classifier, held, mode="single")
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


def compare(rows, data, cfg, held_feats):
  """Per c and pair of samplers: seed-mean frontier gap, its bootstrap CI and the verdict."""
  names = tuple(cfg.posterior.samplers)
  pairs = [(a, b) for a in names for b in names if a == "euclidean" and b != a]
  pairs += [(a, b) for a in names for b in names if a == "riemannian" and b == "linearised"]
  out = {}
  for c in cfg.frontier.cs:
    for a, b in pairs:
      gaps = []
      ranges = []
      for row in rows:
        g, rng = frontier_gap(points_of(row, a, c), points_of(row, b, c))
        ranges.append(rng)
        if g is not None:
          gaps.append(g)
      gap = float(np.mean(gaps)) if gaps else None
      per_seed = {row["seed"]: {a: data[row["seed"]][a], b: data[row["seed"]][b]} for row in rows}
      ci = (
        bootstrap_gap(per_seed, a, b, c, held_feats, cfg.frontier.bootstrap, cfg.seed)
        if gaps
        else None
      )
      out[f"{a}_vs_{b}@{memorisation.c_label(c)}"] = {
        "c": c,
        "gap_mean": gap,
        "gap_per_seed": gaps,
        "fd_ranges": ranges,
        "bootstrap": ci,
        "verdict": verdict(a, b, c, gap, ci, ranges),
      }
  return out


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


def plot_frontier(path, rows, names, cs, reference_fd):
  fig, axes = plt.subplots(1, len(cs), figsize=(5 * len(cs), 4), squeeze=False)
  colours = dict(zip(names, ("C0", "C3", "C2", "C1")))
  for a, c in zip(axes[0], cs):
    for name in names:
      fds = [p[0] for row in rows for p in points_of(row, name, c)]
      lo, hi = min(fds), max(fds)
      qs = np.linspace(lo, hi, 200)
      curves = np.stack([envelope(points_of(row, name, c), qs) for row in rows])
      mean = np.nanmean(curves, 0)
      a.plot(qs, mean, color=colours[name], label=name)
      a.fill_between(qs, np.nanmin(curves, 0), np.nanmax(curves, 0), color=colours[name], alpha=0.2)
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
  lines = [
    f"outputs: {workdir}",
    f"train {results['train_seconds']:.0f}s, frontier {results['frontier_seconds']:.0f}s; "
    f"held-out digits FD (same n) {results['reference']['heldout_subset_fd']:.3f}",
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
    reference = {
      "heldout_subset_fd": metrics.frechet_distance(quality.features(classifier, sub), held_feats),
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
      "comparison": compare(rows, data, cfg, held_feats),
    }
    plot_frontier(
      os.path.join(workdir, FIGURES[0]),
      rows,
      names,
      cfg.frontier.cs,
      reference["heldout_subset_fd"],
    )
    plot_eta(os.path.join(workdir, FIGURES[1]), rows, names, cfg.eval.headline_c)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
