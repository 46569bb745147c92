r"""LID on a mixture of manifolds with analytic dimension: FLIPD, normal bundle, LPCA, MLE, TwoNN.

Trains a denoiser (any schedule / parameterisation of ``memjax.paths``) on the mixture, then
compares per-component mean estimates with the analytic LID (MAE table), draws FLIPD-vs-t0
curves with the automatically picked knee, and writes a figure and ``results.json``::

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
from memjax import data, lid, neighbours, paths

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "manifolds.py")

METHODS = ("flipd", "flipd_knee", "nb", "lpca", "mle")
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


def estimate_all(field, schedule, cfg, train, x_eval, key):
  """Every estimator on ``x_eval`` (model-based) or ``train`` (data-based); arrays and timings."""
  L, M = cfg.lid, cfg.model
  k_probe, k_nb = jax.random.split(key)
  probes = dict(n_probes=int(L.n_probes), key=k_probe) if L.n_probes else {}
  fkw = dict(parameterisation=M.parameterisation, batch_size=L.batch_size, **probes)
  out, secs = {}, {}
  with common.Timer() as t:
    out["flipd"] = np.asarray(lid.flipd(field, x_eval, L.t0, schedule, **fkw))
  secs["flipd"] = t.seconds
  with common.Timer() as t:
    grid = jnp.asarray(L.t0_grid, x_eval.dtype)
    curves = lid.flipd_curve(field, x_eval, grid, schedule, **fkw)
    t_knee, i_knee = lid.auto_t0(grid, curves, schedule)
  secs["flipd_curve"] = t.seconds
  out["curves"], out["t0_knee"] = np.asarray(curves), float(t_knee)
  out["flipd_knee"] = out["curves"][int(i_knee)]
  with common.Timer() as t:
    nb = lid.normal_bundle(
      field,
      x_eval,
      L.nb_t0,
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


def plot(path, cfg, est, comp, dims, t0s):
  fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
  a = ax[0]
  for k, d in enumerate(dims):
    m = est["curves"][:, comp == k].mean(1)
    a.plot(t0s, m, "o-", color=f"C{k}", label=f"component {k} (LID {d})")
    a.axhline(d, color=f"C{k}", ls=":", lw=1)
  a.axvline(est["t0_knee"], color="k", ls="--", lw=1, label=f"knee t0 = {est['t0_knee']:.3g}")
  a.axvline(cfg.lid.t0, color="0.5", ls="-.", lw=1, label=f"fixed t0 = {cfg.lid.t0}")
  a.set(xscale="log", xlabel="t0", ylabel="mean FLIPD", title="FLIPD vs t0")
  a.legend(fontsize=7)
  a = ax[1]
  for k, d in enumerate(dims):
    a.hist(est["flipd"][comp == k], bins=30, alpha=0.6, color=f"C{k}", label=f"LID {d}")
    a.axvline(d, color=f"C{k}", ls=":")
  a.set(xlabel=f"FLIPD at t0 = {cfg.lid.t0}", title="FLIPD per component")
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
  for m in METHODS:
    rows = results["per_component"][m].values()
    lines.append(
      f"{m:>10}: "
      + "  ".join(f"LID {r['analytic_lid']}: {r['mean']:.2f}" for r in rows)
      + f"   MAE {results['mae'][m]:.3f}"
    )
  lines.append(
    f"knee t0 = {results['t0_knee']:.3g}; acceptance (|mean FLIPD − LID| ≤ 0.5, "
    f"LID ≤ 4): {results['acceptance_flipd_mean_within_0.5_dims_le_4']}"
  )
  return "\n".join(lines)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit the denoiser, run every estimator; write ``results.json`` and the figure."""
  k_mix, k_train, k_eval, k_fit, k_est = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
  D, M = cfg.data, cfg.model
  mix = data.manifold_mixture(k_mix, D.dims, D.kinds, D.ambient_dim, D.scale, D.separation)
  train, _, _ = data.sample_manifold_mixture(k_train, mix, D.num_train)
  x_eval, comp, _ = data.sample_manifold_mixture(k_eval, mix, D.num_eval)
  schedule = paths.get_schedule(M.schedule)
  with common.Timer() as t_fit:
    apply_fn, params, losses = common.fit_mlp_cfg(
      train,
      cfg,
      k_fit,
      objective="denoising",
      schedule=schedule,
      parameterisation=M.parameterisation,
      t_min=cfg.train.t_min,
    )
  field = functools.partial(apply_fn, params)
  est, secs = estimate_all(field, schedule, cfg, train, x_eval, k_est)
  comp = np.asarray(comp)
  table = {m: per_component(est[m], comp, mix.dims) for m in METHODS}
  mae = {m: float(np.mean([r["mae"] for r in table[m].values()])) for m in METHODS}
  low = [k for k, d in enumerate(mix.dims) if d <= 4]
  accept = {
    f"component_{k}": table["flipd"][f"component_{k}"]["abs_error_of_mean"] <= 0.5 for k in low
  }
  results = {
    "config": cfg.to_dict(),
    "train_seconds": t_fit.seconds,
    "estimate_seconds": secs,
    "final_train_loss": float(np.mean(losses[-200:])),
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
  }
  plot(os.path.join(workdir, FIGURE), cfg, est, comp, mix.dims, np.asarray(cfg.lid.t0_grid))
  logging.info("MAE: %s", mae)
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURE)
