r"""The manifold memorisation hypothesis on the von Mises circle + duplicated atom.

A flow-matching model is trained on a small set (a circle with von Mises angles, LID* = 1, plus
an atom repeated ``copies`` times, LID* = 0) until its held-out FM loss (fresh draws of the same
distribution) stops improving (:mod:`experiments.lid.fitting`). Generated samples are labelled
memorised by a BASELINE-CORRECTED label: the papers' squared ratio ``d1² ≤ c d2²`` AND
``d1 ≤ f·s`` with ``s`` the arc spacing (median nearest-neighbour distance of the distinct circle
training points) and ``f = cfg.detect.spacing_factor``; the baseline is the fraction of fresh
samples of the TRUE circle density so flagged (for the ratio alone it is large: the circle's
points are so dense that any point on it is near one). Their ``LIDθ`` is FLIPD (exact trace,
D = 2, linear-FM velocity field) at a ``t0`` whose noise-to-signal ``σ/ψ`` is
``cfg.lid.noise_to_signal_factor · s`` (below the spacing, so single training points are resolved);
``LID*`` is the analytic LID of the nearest training point (cross-checked by local PCA).
Memorised samples are split into OD-Mem (``LIDθ < LID*``) and DD-Mem (``LIDθ ≈ LID* = 0``)::

  python -m experiments.lid.mmh_von_mises --config=experiments/lid/configs/mmh_von_mises.py
  python -m experiments.lid.mmh_von_mises \
      --config=experiments/lid/configs/mmh_von_mises.py:smoke --config.workdir=/tmp/x
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.lid import fitting
from memjax import data, lid, memorisation, metrics, neighbours, paths, sampling

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "mmh_von_mises.py")

FIGURE = "mmh_von_mises.png"


def plot(path, train, samples, flipd, labels, mem, lid_star):
  fig, ax = plt.subplots(1, 3, figsize=(16, 4.8))
  a = ax[0]
  sc = a.scatter(*samples.T, c=np.clip(flipd, 0, 2), s=6, cmap="viridis", vmin=0, vmax=2)
  a.scatter(*train.T, marker="x", c="r", s=30, label="training points")
  fig.colorbar(sc, ax=a, label="LIDθ (FLIPD, clipped to [0, 2])")
  a.set(aspect="equal", title="generated samples coloured by LIDθ")
  a.legend(fontsize=7)
  a = ax[1]
  bins = np.linspace(min(-0.5, flipd.min()), max(2.5, flipd.max()), 40)
  for sel, name in (
    (~mem, "not memorised"),
    (mem & (lid_star == 1), "memorised, LID* = 1"),
    (mem & (lid_star == 0), "memorised, LID* = 0 (atom)"),
  ):
    if sel.any():
      a.hist(flipd[sel], bins=bins, alpha=0.6, label=f"{name} ({sel.sum()})")
  a.set(xlabel="LIDθ (FLIPD)", title="LIDθ histograms")
  a.legend(fontsize=7)
  a = ax[2]
  counts = [int(np.sum(labels == i)) for i in range(len(lid.MMH_NAMES))]
  a.bar(lid.MMH_NAMES, counts, color=["0.6", "C3", "C0", "C1"])
  a.set(title="MMH classes of generated samples")
  plotting.save(fig, path)


# Closing lines of the CLI, ``SUMMARY.format_map(results)``: memorised fraction, MMH counts, mean
# FLIPD and the detector.
SUMMARY = (
  "memorised {memorised_fraction:.3f} (baseline of true-density samples "
  "{baseline_memorised_fraction:.3f}; ratio alone {memorised_fraction_ratio_only:.3f}, baseline "
  "{baseline_memorised_fraction_ratio_only:.3f}); t0 {t0:.4g} (σ/ψ {noise_to_signal_t0:.3g}, arc "
  "spacing {arc_spacing:.3g}); MMH counts {mmh_counts}; mean FLIPD {mean_flipd}; "
  "low-LID detector {low_lid_detector}"
)


def arc_spacing(circle) -> float:
  """Median nearest-neighbour distance between the distinct circle training points."""
  circle = jnp.asarray(np.unique(np.asarray(circle), axis=0))
  dist, _ = neighbours.knn(circle, circle, 2)
  return float(np.median(np.asarray(dist)[:, 1]))


def memorised_label(samples, unique, c, max_distance):
  """``(label, ratio-only label, d1)``: ``d1² ≤ c d2²`` and ``d1 ≤ max_distance``."""
  ratio = np.asarray(memorisation.nn_ratio(samples, unique))
  d1, _ = neighbours.knn(samples, unique, 1)
  d1 = np.asarray(d1)[:, 0]
  by_ratio = ratio <= c
  return by_ratio & (d1 <= max_distance), by_ratio, d1


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit, generate, label (baseline-corrected + MMH classes); write ``results.json`` and the
  figure."""
  k_data, k_fit, k_noise, k_held, k_base = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
  D, S, L, C = cfg.data, cfg.sample, cfg.lid, cfg.detect
  vm = data.von_mises_atom(k_data, D.n_circle, D.kappa, D.mu, D.radius, tuple(D.atom), D.copies)
  # Held-out draws of the same distribution (same atom share), for the stopping rule only.
  n_h = int(D.num_heldout)
  n_h_atom = round(n_h * D.copies / (D.n_circle + D.copies))
  held = data.von_mises_atom(
    k_held, n_h - n_h_atom, D.kappa, D.mu, D.radius, tuple(D.atom), n_h_atom
  ).x
  apply_fn, params, train_report = fitting.fit_with_stopping(vm.x, held, cfg, k_fit)
  x0 = jax.random.normal(k_noise, (S.num_samples, 2), vm.x.dtype)
  gen = sampling.generate(apply_fn, params, x0, solver=S.solver, rtol=S.rtol, atol=S.atol)
  ok = np.asarray(gen.success)
  samples = gen.x[ok]
  unique = jnp.asarray(np.unique(np.asarray(vm.x), axis=0))  # the ratio needs distinct points
  spacing = arc_spacing(np.asarray(vm.x)[~np.asarray(vm.is_atom)])
  max_d1 = C.spacing_factor * spacing
  mem, mem_ratio, d1 = memorised_label(samples, unique, C.mem_c, max_d1)
  # Baseline: fresh samples of the TRUE circle density (no atom) under the same labels.
  fresh = data.von_mises_atom(k_base, C.num_baseline, D.kappa, D.mu, D.radius, tuple(D.atom), 0).x
  base, base_ratio, _ = memorised_label(fresh, unique, C.mem_c, max_d1)
  _, nearest = neighbours.knn(samples, vm.x, 1)
  lid_star = np.asarray(vm.lid)[np.asarray(nearest[:, 0])]
  lid_star_lpca = np.asarray(lid.lpca(vm.x, k=L.lpca_k, queries=samples))
  field = functools.partial(apply_fn, params)
  sched = paths.linear_fm()
  ratio_t0 = L.noise_to_signal_factor * spacing
  t0 = float(paths.time_at_noise_to_signal(sched, ratio_t0))
  t0_vp = float(paths.match_noise_level(L.vp_t0, paths.vp_linear(), sched))
  grid = jnp.asarray(L.t0_grid, samples.dtype)
  kw = dict(parameterisation="velocity")
  curves = np.asarray(lid.flipd_curve(field, samples, grid, sched, **kw))
  flipd = np.asarray(lid.flipd(field, samples, t0, sched, **kw))
  flipd_vp = np.asarray(lid.flipd(field, samples, t0_vp, sched, **kw))
  t_knee, i_knee = lid.auto_t0(grid, jnp.asarray(curves), sched)
  flipd_knee = curves[int(i_knee)]
  labels = np.asarray(
    lid.mmh_labels(
      jnp.asarray(flipd),
      jnp.asarray(lid_star, flipd.dtype),
      jnp.asarray(mem),
      tol=L.tol,
      dd_max_lid=L.dd_max_lid,
    )
  )
  groups = {
    "not_memorised": ~mem,
    "memorised_circle": mem & (lid_star == 1),
    "memorised_atom": mem & (lid_star == 0),
  }
  b, b_ratio = float(base.mean()), float(base_ratio.mean())
  excess = lambda m, b: (m - b) / (1.0 - b) if b < 1 else float("nan")
  results = {
    "config": cfg.to_dict(),
    "training": train_report,
    "train_seconds": train_report["train_seconds"],
    "final_train_loss": train_report["running_train_loss_last_chunk"],
    "solver": sampling.summarise(gen),
    "num_samples": int(ok.sum()),
    "arc_spacing": spacing,
    "memorised_label": (
      f"d1² ≤ {C.mem_c:g}·d2² (squared ratio) AND d1 ≤ {C.spacing_factor:g} × arc spacing "
      f"{spacing:.4g} (= {max_d1:.3g})"
    ),
    "memorised_fraction": float(mem.mean()),
    "baseline_memorised_fraction": b,
    "memorised_fraction_excess_over_baseline": excess(float(mem.mean()), b),
    "memorised_fraction_circle_samples": float(mem[lid_star == 1].mean())
    if (lid_star == 1).any()
    else float("nan"),
    "memorised_fraction_ratio_only": float(mem_ratio.mean()),
    "baseline_memorised_fraction_ratio_only": b_ratio,
    "nearest_distance_median": float(np.median(d1)),
    "nearest_distance_median_circle": float(np.median(d1[lid_star == 1]))
    if (lid_star == 1).any()
    else float("nan"),
    "atom_region": {  # samples whose nearest training point is the atom
      "count": int(np.sum(lid_star == 0)),
      "median_nearest_distance": float(np.median(d1[lid_star == 0]))
      if (lid_star == 0).any()
      else float("nan"),
      "memorised": int(np.sum(mem & (lid_star == 0))),
    },
    "mmh_counts": lid.mmh_counts(labels),
    "mean_flipd": {
      k: float(np.mean(flipd[v])) if v.any() else float("nan") for k, v in groups.items()
    },
    "low_lid_detector": metrics.detection_report(-flipd, mem),
    "low_lid_detector_at_vp_matched_t0": metrics.detection_report(-flipd_vp, mem),
    "low_lid_detector_at_knee": metrics.detection_report(-flipd_knee, mem),
    "low_lid_detector_ratio_only_label": metrics.detection_report(-flipd, mem_ratio),
    "lpca_agrees_with_analytic_lid_star": float(np.mean(lid_star_lpca == lid_star)),
    "t0": t0,
    "noise_to_signal_t0": ratio_t0,
    "t0_choice": (
      f"σ/ψ = {L.noise_to_signal_factor:g} × arc spacing (below it); also reported: the FM t0 "
      f"with the noise level of VP t0 = {L.vp_t0:g} ({t0_vp:.4g}, σ/ψ "
      f"{float(paths.noise_to_signal(sched, t0_vp)):.3g}) and the knee"
    ),
    "t0_vp_matched": t0_vp,
    "t0_knee": float(t_knee),
    "flipd_curve_means": {
      k: curves[:, v].mean(1).tolist() if v.any() else None for k, v in groups.items()
    },
    "metric_notes": {
      "memorised_fraction": "rewards copying: samples within f × spacing of one training point "
      "and much nearer to it than to the next; compare with baseline_memorised_fraction, the "
      "rate at which a PERFECT sampler of the circle density is flagged",
      "low_lid_detector": "AUROC of −FLIPD against that label: rewards a model whose density "
      "is lower-dimensional at the copies than elsewhere",
    },
  }
  plot(
    os.path.join(workdir, FIGURE),
    np.asarray(vm.x),
    np.asarray(samples),
    flipd,
    labels,
    mem,
    lid_star,
  )
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
