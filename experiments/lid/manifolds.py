r"""LID on a mixture of manifolds with analytic dimension: FLIPD, normal bundle, LPCA, MLE, TwoNN.

Trains a denoiser (any schedule / parameterisation of ``memjax.paths``) on the mixture until its
held-out loss stops improving (:mod:`experiments.lid.fitting`), then compares per-component mean
estimates with the analytic LID (MAE table), draws FLIPD-vs-t0 curves with the automatically
picked knee, and puts beside every learned FLIPD / normal-bundle number the same estimator on the
EXACT score of the noised mixture (:func:`memjax.data.manifold_mixture_score`, float64) at the
same time, so that estimator error and model error are told apart. Times ``t0`` are given on
``cfg.lid.t0_schedule`` and carried to the model's schedule by noise level ``σ/ψ``
(:func:`memjax.paths.match_noise_level`). Writes a figure and ``results.json``::

  python -m experiments.lid.manifolds --config=experiments/lid/configs/manifolds.py
  python -m experiments.lid.manifolds --config=experiments/lid/configs/manifolds.py:smoke \
      --config.workdir=/tmp/x
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from experiments import common, plotting
from experiments.lid import fitting
from memjax import data, lid, neighbours, paths

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "manifolds.py")

METHODS = ("flipd", "flipd_knee", "nb", "lpca", "mle")
# The same estimators on the exact score of the noised mixture (float64), at the same times.
EXACT = ("flipd_exact", "flipd_exact_knee", "nb_exact")
FIGURE = "lid_manifolds.png"


def per_component(values, comp, dims) -> dict:
  """Mean, std and MAE against the analytic LID of ``values`` per mixture component."""
  values, comp = np.asarray(values, np.float64), np.asarray(comp)
  rows = {}
  for k, d in enumerate(dims):
    v = values[comp == k]
    rows[f"component_{k}"] = {
      "analytic_lid": int(d),
      "mean": float(np.mean(v)),
      "std": float(np.std(v)),
      "mae": float(np.mean(np.abs(v - d))),
      "abs_error_of_mean": float(abs(np.mean(v) - d)),
    }
  return rows


def model_times(cfg, schedule) -> dict:
  """``t0``, the ``t0`` grid and the normal-bundle time on the model's ``schedule``: given on
  ``cfg.lid.t0_schedule`` and matched by noise level ``σ/ψ``."""
  L = cfg.lid
  src = paths.get_schedule(L.t0_schedule)
  to = lambda t: float(paths.match_noise_level(t, src, schedule))
  same = src.name == schedule.name
  out = {
    "t0": L.t0 if same else to(L.t0),
    "t0_grid": list(L.t0_grid) if same else [to(t) for t in L.t0_grid],
    "nb_t0": L.nb_t0 if same else to(L.nb_t0),
  }
  out["noise_to_signal_t0"] = float(paths.noise_to_signal(schedule, out["t0"]))
  out["noise_to_signal_nb_t0"] = float(paths.noise_to_signal(schedule, out["nb_t0"]))
  return out


def estimate_all(field, schedule, cfg, times, train, x_eval, key):
  """Every estimator on ``x_eval`` (model-based) or ``train`` (data-based); arrays and timings."""
  L, M = cfg.lid, cfg.model
  k_probe, k_nb = jax.random.split(key)
  probes = dict(n_probes=int(L.n_probes), key=k_probe) if L.n_probes else {}
  fkw = dict(parameterisation=M.parameterisation, batch_size=L.batch_size, **probes)
  out, secs = {}, {}
  with common.Timer() as t:
    out["flipd"] = np.asarray(lid.flipd(field, x_eval, times["t0"], schedule, **fkw))
  secs["flipd"] = t.seconds
  with common.Timer() as t:
    grid = jnp.asarray(times["t0_grid"], x_eval.dtype)
    knee = lid.flipd_at_knee(field, x_eval, grid, schedule, **fkw)
  secs["flipd_curve"] = t.seconds
  out["curves"], out["t0_knee"] = np.asarray(knee.curves), knee.t0
  out["i_knee"] = knee.index
  out["flipd_knee"] = out["curves"][knee.index]
  with common.Timer() as t:
    nb = lid.normal_bundle(
      field,
      x_eval,
      times["nb_t0"],
      schedule,
      k_nb,
      parameterisation=M.parameterisation,
      centre=L.nb_centre,
      batch_size=L.batch_size,
    )
    out["nb"], out["nb_sv"] = np.asarray(nb.lid), np.asarray(nb.singular_values)
  secs["normal_bundle"] = t.seconds
  with common.Timer() as t:
    out["lpca"] = np.asarray(lid.lpca(train, k=L.lpca_k, queries=x_eval))
  secs["lpca"] = t.seconds
  _, mle_pw = lid.mle(train, k=L.mle_k)
  _, nearest = neighbours.knn(x_eval, train, 1)
  out["mle"] = np.asarray(mle_pw)[np.asarray(nearest[:, 0])]
  return out, secs


def estimate_exact(mix, schedule, cfg, times, x_eval, i_knee, key):
  """FLIPD (over the grid: at ``t0`` and at the learned knee) and the normal bundle of the EXACT
  score of the noised mixture, in float64."""
  L = cfg.lid
  out, secs = {}, {}
  with common.x64(True):
    f64 = lambda a: jnp.asarray(np.asarray(a), jnp.float64)
    mix64 = mix._replace(centres=f64(mix.centres), frames=tuple(f64(f) for f in mix.frames))
    field = data.manifold_mixture_score_field(mix64, schedule)
    x = f64(x_eval)
    grid = np.asarray(times["t0_grid"], np.float64)
    with common.Timer() as t:
      curves = np.asarray(
        lid.flipd_curve(
          field, x, jnp.asarray(grid), schedule, parameterisation="score", batch_size=L.batch_size
        )
      )
    secs["flipd_exact_curve"] = t.seconds
    i_t0 = int(np.argmin(np.abs(grid - times["t0"])))
    if not np.isclose(grid[i_t0], times["t0"]):
      raise ValueError(f"t0 = {times['t0']} must be on the t0 grid {list(grid)}.")
    out["curves_exact"] = curves
    out["flipd_exact"], out["flipd_exact_knee"] = curves[i_t0], curves[int(i_knee)]
    if L.exact_nb:
      with common.Timer() as t:
        nb = lid.normal_bundle(
          field,
          x,
          times["nb_t0"],
          schedule,
          key,
          parameterisation="score",
          centre=L.nb_centre,
          batch_size=L.batch_size,
        )
      secs["nb_exact"] = t.seconds
      out["nb_exact"] = np.asarray(nb.lid)
  return out, secs


def plot(path, cfg, est, comp, dims, t0s):
  fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
  a = ax[0]
  for k, d in enumerate(dims):
    m = est["curves"][:, comp == k].mean(1)
    a.plot(t0s, m, "o-", color=f"C{k}", label=f"component {k} (LID {d})")
    if "curves_exact" in est:
      a.plot(t0s, est["curves_exact"][:, comp == k].mean(1), "x--", color=f"C{k}", lw=1)
    a.axhline(d, color=f"C{k}", ls=":", lw=1)
  a.axvline(est["t0_knee"], color="k", ls="--", lw=1, label=f"knee t0 = {est['t0_knee']:.3g}")
  a.axvline(est["t0"], color="0.5", ls="-.", lw=1, label=f"fixed t0 = {est['t0']:.3g}")
  a.set(xscale="log", xlabel="t0", ylabel="mean FLIPD", title="FLIPD vs t0 (x--: exact score)")
  a.legend(fontsize=7)
  a = ax[1]
  for k, d in enumerate(dims):
    a.hist(est["flipd"][comp == k], bins=30, alpha=0.6, color=f"C{k}", label=f"LID {d}")
    a.axvline(d, color=f"C{k}", ls=":")
  a.set(xlabel=f"FLIPD at t0 = {est['t0']:.3g}", title="FLIPD per component")
  a.legend(fontsize=7)
  a = ax[2]
  for k, d in enumerate(dims):
    a.semilogy(
      np.arange(1, est["nb_sv"].shape[1] + 1),
      est["nb_sv"][comp == k].mean(0),
      "o-",
      color=f"C{k}",
      label=f"LID {d}: NB mean {est['nb'][comp == k].mean():.2f}",
    )
  a.set(xlabel="index", ylabel="singular value of scores", title="normal bundle spectrum")
  a.legend(fontsize=7)
  plotting.save(fig, path)


def summarise(results: dict, workdir: str) -> str:
  """Per-method means and MAE, the knee and the acceptance check."""
  del workdir
  lines = []
  for m in METHODS + tuple(e for e in EXACT if e in results["per_component"]):
    rows = results["per_component"][m].values()
    lines.append(
      f"{m:>10}: "
      + "  ".join(f"LID {r['analytic_lid']}: {r['mean']:.2f}" for r in rows)
      + f"   MAE {results['mae'][m]:.3f}"
    )
  tr = results["training"]
  lines.append(
    f"training: stopped at step {tr['stopping_step']} of {tr['max_steps']} (best {tr['best_step']}"
    f"); held-out loss {tr['best_heldout_loss']:.4f}, train {tr['best_fixed_batch_train_loss']:.4f}"
  )
  lines.append(
    f"knee t0 = {results['t0_knee']:.3g}; acceptance (|mean FLIPD − LID| ≤ 0.5, "
    f"LID ≤ 4): {results['acceptance_flipd_mean_within_0.5_dims_le_4']}"
  )
  return "\n".join(lines)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit the denoiser, run every estimator and the exact-score ones; write ``results.json`` and the
  figure."""
  keys = jax.random.split(jax.random.PRNGKey(cfg.seed), 7)
  k_mix, k_train, k_eval, k_fit, k_est, k_held, k_exact = keys
  D, M = cfg.data, cfg.model
  mix = data.manifold_mixture(k_mix, D.dims, D.kinds, D.ambient_dim, D.scale, D.separation)
  train, _, _ = data.sample_manifold_mixture(k_train, mix, D.num_train)
  x_eval, comp, _ = data.sample_manifold_mixture(k_eval, mix, D.num_eval)
  held_out, _, _ = data.sample_manifold_mixture(k_held, mix, D.num_heldout)
  schedule = paths.get_schedule(M.schedule)
  times = model_times(cfg, schedule)
  apply_fn, params, train_report = fitting.fit_with_stopping(
    train,
    held_out,
    cfg,
    k_fit,
    objective="denoising",
    schedule=schedule,
    parameterisation=M.parameterisation,
    t_min=cfg.train.t_min,
  )
  field = functools.partial(apply_fn, params)
  est, secs = estimate_all(field, schedule, cfg, times, train, x_eval, k_est)
  exact, secs_exact = estimate_exact(mix, schedule, cfg, times, x_eval, est["i_knee"], k_exact)
  est.update(exact, t0=times["t0"])
  secs.update(secs_exact)
  comp = np.asarray(comp)
  methods = METHODS + tuple(e for e in EXACT if e in est)
  table = {m: per_component(est[m], comp, mix.dims) for m in methods}
  mae = {m: float(np.mean([r["mae"] for r in table[m].values()])) for m in methods}
  low = [k for k, d in enumerate(mix.dims) if d <= 4]
  accept = {
    f"component_{k}": table["flipd"][f"component_{k}"]["abs_error_of_mean"] <= 0.5 for k in low
  }
  results = {
    "config": cfg.to_dict(),
    "training": train_report,
    "train_seconds": train_report["train_seconds"],
    "estimate_seconds": secs,
    "final_train_loss": train_report["running_train_loss_last_chunk"],
    "times": times,
    "t0_choice": (
      f"fixed t0 = {cfg.lid.t0} on {cfg.lid.t0_schedule} carried to {schedule.name} by σ/ψ "
      f"(= {times['t0']:.4g}, σ/ψ {times['noise_to_signal_t0']:.4g}); the knee t0 of the "
      "learned mean curve is reported beside it"
    ),
    "t0_knee": est["t0_knee"],
    "per_component": table,
    "mae": mae,
    "acceptance_flipd_mean_within_0.5_dims_le_4": accept,
    "global": {
      "mle_harmonic": float(lid.mle(train, k=cfg.lid.mle_k)[0]),
      "twonn": float(lid.twonn(train)),
    },
    "flipd_curve_means": {
      f"component_{k}": est["curves"][:, comp == k].mean(1).tolist() for k in range(len(mix.dims))
    },
    "flipd_exact_curve_means": {
      f"component_{k}": est["curves_exact"][:, comp == k].mean(1).tolist()
      for k in range(len(mix.dims))
    },
    "metric_notes": {
      "flipd": "learned-score FLIPD at the fixed t0: model error + the estimator's finite-σ bias",
      "flipd_exact": "exact-score FLIPD at the same t0: the estimator's own bias at that σ/ψ "
      "(curvature, boundary of the box pieces); learned − exact is the model's share",
      "lpca": "data-based, rewards flat neighbourhoods at the k-NN scale",
    },
  }
  plot(os.path.join(workdir, FIGURE), cfg, est, comp, mix.dims, np.asarray(times["t0_grid"]))
  logging.info("MAE: %s", mae)
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURE)
