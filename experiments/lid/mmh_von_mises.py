r"""The manifold memorisation hypothesis on the von Mises circle + duplicated atom.

A flow-matching model is trained long on a small set (a circle with von Mises angles, LID* = 1,
plus an atom repeated ``copies`` times, LID* = 0). Generated samples are labelled memorised by
the ratio criterion, their ``LIDθ`` is FLIPD (exact, D = 2, linear-FM velocity field at ``t0``
near 1) and ``LID*`` is the analytic LID of the nearest training point (cross-checked by local
PCA). Memorised samples are split into OD-Mem (``LIDθ < LID*``) and DD-Mem
(``LIDθ ≈ LID* = 0``)::

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
  "memorised {memorised_fraction:.3f}; MMH counts {mmh_counts}; mean FLIPD {mean_flipd}; "
  "low-LID detector {low_lid_detector}"
)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit, generate, label (ratio + MMH classes); write ``results.json`` and the figure."""
  k_data, k_fit, k_noise = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
  D, S, L = cfg.data, cfg.sample, cfg.lid
  vm = data.von_mises_atom(k_data, D.n_circle, D.kappa, D.mu, D.radius, tuple(D.atom), D.copies)
  with common.Timer() as t_fit:
    apply_fn, params, losses = common.fit_mlp_cfg(vm.x, cfg, k_fit)
  x0 = jax.random.normal(k_noise, (S.num_samples, 2), vm.x.dtype)
  gen = sampling.generate(apply_fn, params, x0, solver=S.solver, rtol=S.rtol, atol=S.atol)
  ok = np.asarray(gen.success)
  samples = gen.x[ok]
  unique = jnp.asarray(np.unique(np.asarray(vm.x), axis=0))  # the ratio needs distinct points
  mem = np.asarray(memorisation.nn_ratio(samples, unique) <= cfg.detect.mem_c)
  _, nearest = neighbours.knn(samples, vm.x, 1)
  lid_star = np.asarray(vm.lid)[np.asarray(nearest[:, 0])]
  lid_star_lpca = np.asarray(lid.lpca(vm.x, k=L.lpca_k, queries=samples))
  field = functools.partial(apply_fn, params)
  sched = paths.linear_fm()
  grid = jnp.asarray(L.t0_grid, samples.dtype)
  curves = np.asarray(lid.flipd_curve(field, samples, grid, sched, parameterisation="velocity"))
  flipd = np.asarray(lid.flipd(field, samples, L.t0, sched, parameterisation="velocity"))
  t_knee, _ = lid.auto_t0(grid, jnp.asarray(curves), sched)
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
  results = {
    "config": cfg.to_dict(),
    "train_seconds": t_fit.seconds,
    "final_train_loss": float(np.mean(losses[-200:])),
    "solver": sampling.summarise(gen),
    "num_samples": int(ok.sum()),
    "memorised_fraction": float(mem.mean()),
    "mmh_counts": lid.mmh_counts(labels),
    "mean_flipd": {
      k: float(np.mean(flipd[v])) if v.any() else float("nan") for k, v in groups.items()
    },
    "low_lid_detector": metrics.detection_report(-flipd, mem),
    "lpca_agrees_with_analytic_lid_star": float(np.mean(lid_star_lpca == lid_star)),
    "t0": L.t0,
    "t0_knee": float(t_knee),
    "flipd_curve_means": {
      k: curves[:, v].mean(1).tolist() if v.any() else None for k, v in groups.items()
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
