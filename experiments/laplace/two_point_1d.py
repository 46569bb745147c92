r"""Riemannian vs Euclidean Laplace over flow-matching weights on the 1D two-point set {−m, +m}.

For every η (paired: the same tangent velocities v for every sampler): KL between the target
GMM and a KDE of generated samples, the odd-symmetry score E(θ), M_c, held-out FM loss and the
velocity-field variance over posterior samples::

  python -m experiments.laplace.two_point_1d --config=experiments/laplace/configs/two_point_1d.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.laplace import pipeline
from memjax import data, memorisation, metrics

# The default ``--config`` (see :func:`experiments.common.main`).
CONFIG = os.path.join(os.path.dirname(__file__), "configs", "two_point_1d.py")

FIGURES = ("sweep.png", "fields.png", "samples.png")


def _grids(dtype):
  """(x, t) grids of the symmetry score and of the velocity-field panels."""
  return {
    "xs_sym": jnp.linspace(0.05, 2.0, 40, dtype=dtype)[:, None],
    "ts_sym": jnp.linspace(0.0, 0.95, 20, dtype=dtype),
    "xs": jnp.linspace(-2.0, 2.0, 81, dtype=dtype),
    "ts": jnp.linspace(0.0, 0.95, 40, dtype=dtype),
  }


def make_extra_metrics(cfg, fit):
  """KL(target ‖ KDE), symmetry score and field variance of a stack of models."""
  dtype = fit.theta_map.dtype
  g = _grids(dtype)
  gmm = data.two_point_gmm(cfg.data.m, cfg.data.target_std, dtype)
  grid = jnp.linspace(-cfg.data.m - 1.0, cfg.data.m + 1.0, 801, dtype=dtype)
  sym_fn = jax.jit(
    jax.vmap(
      lambda th: metrics.symmetry_score(
        fit.apply_fn, fit.subset.merge(th), g["xs_sym"], g["ts_sym"]
      )
    )
  )

  def extra(thetas, ok, xs):
    sym = np.asarray(sym_fn(thetas))[ok]
    u = pipeline.field_grid(fit.apply_fn, fit.subset, thetas, g["xs"], g["ts"])[ok]
    kl = metrics.kl_to_target_1d(
      pipeline.target_log_prob_fn(gmm), jnp.asarray(xs[:, 0]), grid, cfg.eval.kde_bandwidth
    )
    return {
      "kl_target_vs_kde": float(kl),
      "symmetry_score": common.stats(sym),
      "field_variance_mean": float(np.mean(np.var(u, axis=0))),
    }

  return extra


def plot_fields(path, fit, keep_eta, eta):
  """Mean, spread and odd-part of the sampled velocity fields, one row per sampler."""
  g = _grids(fit.theta_map.dtype)
  ts, xs = np.asarray(g["ts"]), np.asarray(g["xs"])
  u_map = pipeline.field_grid(fit.apply_fn, fit.subset, fit.theta_map[None], g["xs"], g["ts"])[0]
  names = list(keep_eta)
  fig, ax = plt.subplots(len(names), 3, figsize=(15, 4 * len(names)), squeeze=False)
  lim = np.percentile(np.abs(u_map), 98)
  for row, name in enumerate(names):
    title = name.capitalize()
    u = pipeline.field_grid(
      fit.apply_fn, fit.subset, jnp.asarray(keep_eta[name]["theta"]), g["xs"], g["ts"]
    )
    mean = u.mean(0)
    panels = (
      (mean, f"{title} LA: mean u(x,t), η={eta}", "RdBu_r", -lim, lim),
      (u.std(0), f"{title} LA: std over samples", "magma", 0, None),
      (
        mean + mean[:, ::-1],
        f"{title}: mean u(x,t)+u(−x,t) (0 if odd)",
        "RdBu_r",
        -lim / 4,
        lim / 4,
      ),
    )
    for a, (val, name_, cmap, lo, hi) in zip(ax[row], panels):
      im = a.pcolormesh(ts, xs, val.T, cmap=cmap, vmin=lo, vmax=hi, shading="auto")
      a.set(title=name_, xlabel="t", ylabel="x")
      fig.colorbar(im, ax=a)
  plotting.save(fig, path, dpi=100)


def plot_sweep(path, rows, map_metrics, names):
  """Each metric against η for every sampler, with the MAP value dotted."""
  panels = (
    ("held-out FM loss", lambda m: m["heldout_fm_loss"]["mean"]),
    ("KL(target ‖ KDE)", lambda m: m["kl_target_vs_kde"]),
    ("symmetry score E(θ)", lambda m: m["symmetry_score"]["mean"]),
    ("M_1/3 (memorised fraction)", pipeline.m_c),
    ("field variance (mean over grid)", lambda m: m["field_variance_mean"]),
  )
  fig, ax = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
  for a, (title, f) in zip(ax, panels):
    pipeline.eta_panel(a, rows, map_metrics, names, title, f)
  ax[0].set_yscale("log")
  ax[0].legend(fontsize=8)
  plotting.save(fig, path, dpi=100)


def plot_samples(path, keep, gen_map, m):
  """Histograms of the generated samples: MAP, then every sampler at each η."""
  etas = sorted(keep)
  fig, ax = plt.subplots(1, len(etas) + 1, figsize=(3.3 * (len(etas) + 1), 3), sharey=True)
  bins = np.linspace(-m - 1, m + 1, 81)
  ax[0].hist(gen_map.ravel(), bins=bins, density=True, color="k", alpha=0.6)
  ax[0].set(title="MAP samples")
  for a, eta in zip(ax[1:], etas):
    for name, kept in keep[eta].items():
      a.hist(kept["gen"].ravel(), bins=bins, density=True, alpha=0.5, label=name.capitalize())
    a.set(title=f"η = {eta}")
  ax[1].legend(fontsize=7)
  plotting.save(fig, path, dpi=100)


def summarise(results: dict, workdir: str) -> str:
  """One line per claim."""
  del workdir
  return pipeline.summarise_claims(results["claims"])


def run(cfg, workdir: str) -> dict:
  """MAP → Laplace fit → η sweep on {−m, +m}; writes results.json and figures to ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(True):
    k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed))
    train = data.two_point(cfg.data.m)
    fit, ev, info = pipeline.build_posterior(cfg, train, k_post)
    sweep = pipeline.run_eta_sweep(fit, ev, cfg, k_sweep, make_extra_metrics(cfg, fit))
    rows = sweep.rows
    paths = {
      "heldout_fm_loss": ("heldout_fm_loss", "mean"),
      "symmetry_score": ("symmetry_score", "mean"),
      "kl_target_vs_kde": ("kl_target_vs_kde",),
      "M_1/3": ("memorisation", "M_c", memorisation.c_label(1 / 3)),
    }
    results = {
      "config": cfg.to_dict(),
      "map": {**info, **sweep.map_metrics},
      "sweep": rows,
      "claims": pipeline.claims(rows, paths, cfg.eval.compare),
    }
    figs = [os.path.join(workdir, f) for f in FIGURES]
    plot_sweep(figs[0], rows, sweep.map_metrics, tuple(cfg.posterior.samplers))
    if sweep.keep:
      eta_f = min(sweep.keep, key=lambda e: abs(e - cfg.eval.field_eta))
      plot_fields(figs[1], fit, sweep.keep[eta_f], eta_f)
      plot_samples(figs[2], sweep.keep, sweep.gen_map, cfg.data.m)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURES)
