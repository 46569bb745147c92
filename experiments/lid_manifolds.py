r"""LID on a mixture of manifolds with analytic dimension: FLIPD, normal bundle, LPCA, MLE, TwoNN.

Trains a denoiser (any schedule / parameterisation of ``memjax.paths``) on the
mixture, then compares per-component mean estimates with the analytic LID (MAE
table), draws FLIPD-vs-t0 curves with the automatically picked knee, and writes
a figure and ``results.json``::

  python -m experiments.lid_manifolds --config=experiments/configs/lid_manifolds.py
  python -m experiments.lid_manifolds --config=experiments/configs/lid_manifolds.py:smoke --config.workdir=/tmp/x
"""
from __future__ import annotations

import functools
import os

from absl import app, logging
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments import common  # noqa: E402
from memjax import data, lid, nets, paths, training  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "lid_manifolds.py"))


def fit_denoiser(train, *, key, schedule, parameterisation, hidden, time_dim, steps, batch_size, lr,
                 ema_decay=None, t_min=1e-3, progress=True):
  """Train an :class:`memjax.nets.MLPField` with :func:`memjax.training.denoising_objective`.

  Adam with a cosine-decayed learning rate. Returns ``(field, params, losses)`` with
  ``field(y (B, D), t (B,))`` closed over the (EMA) parameters.
  """
  k_init, k_train = jax.random.split(key)
  module = nets.MLPField(dim=train.shape[1], hidden=tuple(hidden), time_dim=time_dim)
  apply_fn = nets.velocity_fn(module)
  params = nets.init_params(module, k_init, train.shape[1], train.dtype)
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
  loss_fn = training.denoising_objective(apply_fn, schedule, train, batch_size, parameterisation, t_min)
  res = training.train(loss_fn, params, opt, steps, k_train, chunk_size=min(500, steps), ema_decay=ema_decay,
                       progress=progress)
  out = res.state.ema_params if ema_decay is not None else res.state.params
  return functools.partial(apply_fn, out), out, res.losses


def per_component(values, comp, dims):
  """Mean, std and MAE against the analytic LID of ``values`` per mixture component."""
  values, comp = np.asarray(values, np.float64), np.asarray(comp)
  rows = {}
  for k, d in enumerate(dims):
    v = values[comp == k]
    rows[f"component_{k}"] = {"analytic_lid": int(d), "mean": float(np.mean(v)), "std": float(np.std(v)),
                              "mae": float(np.mean(np.abs(v - d))), "abs_error_of_mean": float(abs(np.mean(v) - d))}
  return rows


def estimate_all(field, schedule, cfg, train, x_eval, key):
  """Every estimator on ``x_eval`` (model-based) or ``train`` (data-based); returns arrays and timings."""
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
    nb = lid.normal_bundle(field, x_eval, L.nb_t0, schedule, k_nb, parameterisation=M.parameterisation,
                           centre=L.nb_centre, batch_size=L.batch_size)
    out["nb"], out["nb_sv"] = np.asarray(nb.lid), np.asarray(nb.singular_values)
  secs["normal_bundle"] = t.seconds
  with common.Timer() as t:
    out["lpca"] = np.asarray(lid.lpca(train, k=L.lpca_k, queries=x_eval))
  secs["lpca"] = t.seconds
  _, mle_pw = lid.mle(train, k=L.mle_k)
  _, nearest = lid.knn(x_eval, train, 1)
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
    a.semilogy(np.arange(1, est["nb_sv"].shape[1] + 1), est["nb_sv"][comp == k].mean(0), "o-", color=f"C{k}",
               label=f"LID {d}: NB mean {est['nb'][comp == k].mean():.2f}")
  a.set(xlabel="index", ylabel="singular value of scores", title="normal bundle spectrum")
  a.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  out = common.make_run_dir("lid_manifolds", workdir=cfg.workdir or None)
  k_mix, k_train, k_eval, k_fit, k_est = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
  D, M = cfg.data, cfg.model
  mix = data.manifold_mixture(k_mix, D.dims, D.kinds, D.ambient_dim, D.scale, D.separation)
  train, _, _ = data.sample_manifold_mixture(k_train, mix, D.num_train)
  x_eval, comp, _ = data.sample_manifold_mixture(k_eval, mix, D.num_eval)
  schedule = paths.get_schedule(M.schedule)
  with common.Timer() as t_fit:
    field, _, losses = fit_denoiser(train, key=k_fit, schedule=schedule, parameterisation=M.parameterisation,
                                    hidden=M.hidden, time_dim=M.time_dim, steps=M.steps, batch_size=M.batch_size,
                                    lr=M.lr, ema_decay=M.ema_decay, t_min=M.t_min, progress=cfg.progress)
  est, secs = estimate_all(field, schedule, cfg, train, x_eval, k_est)
  comp = np.asarray(comp)
  methods = ("flipd", "flipd_knee", "nb", "lpca", "mle")
  table = {m: per_component(est[m], comp, mix.dims) for m in methods}
  mae = {m: float(np.mean([r["mae"] for r in table[m].values()])) for m in methods}
  low = [k for k, d in enumerate(mix.dims) if d <= 4]
  accept = {f"component_{k}": table["flipd"][f"component_{k}"]["abs_error_of_mean"] <= 0.5 for k in low}
  results = {"config": cfg.to_dict(), "train_seconds": t_fit.seconds, "estimate_seconds": secs,
             "final_train_loss": float(np.mean(losses[-200:])), "t0_knee": est["t0_knee"],
             "per_component": table, "mae": mae, "acceptance_flipd_mean_within_0.5_dims_le_4": accept,
             "global": {"mle_harmonic": float(lid.mle(train, k=cfg.lid.mle_k)[0]), "twonn": float(lid.twonn(train))},
             "flipd_curve_means": {f"component_{k}": est["curves"][:, comp == k].mean(1).tolist()
                                   for k in range(len(mix.dims))}}
  fig = os.path.join(out, "lid_manifolds.png")
  plot(fig, cfg, est, comp, mix.dims, np.asarray(cfg.lid.t0_grid))
  js = common.write_json(os.path.join(out, "results.json"), results)
  logging.info("MAE: %s", mae)
  print(f"figure: {fig}\nresults: {js}")
  for m in methods:
    print(f"{m:>10}: " + "  ".join(f"LID {r['analytic_lid']}: {r['mean']:.2f}" for r in table[m].values())
          + f"   MAE {mae[m]:.3f}")
  print(f"knee t0 = {est['t0_knee']:.3g}; acceptance (|mean FLIPD − LID| ≤ 0.5, LID ≤ 4): {accept}")


if __name__ == "__main__":
  app.run(main)
