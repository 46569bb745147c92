r"""Riemannian vs Euclidean Laplace over flow-matching weights on the 1D two-point set {−m, +m}.

For every η (paired: the same tangent velocities v for both posteriors): KL between
the target GMM and a KDE of generated samples, the odd-symmetry score E(θ), M_c,
held-out FM loss and the velocity-field variance over posterior samples::

  python -m experiments.two_point_1d --config=experiments/configs/two_point_1d.py
"""
from __future__ import annotations

import os

from absl import app
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from experiments import common, laplace_toy  # noqa: E402
from memjax import data, metrics  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "two_point_1d.py"))

XS_SYM = jnp.linspace(0.05, 2.0, 40)[:, None]
TS_SYM = jnp.linspace(0.0, 0.95, 20)
XS_GRID = jnp.linspace(-2.0, 2.0, 81)
TS_GRID = jnp.linspace(0.0, 0.95, 40)


def make_extra_metrics(cfg):
  gmm = data.two_point_gmm(cfg.m, cfg.target_std, jnp.float64)
  grid = jnp.linspace(-cfg.m - 1.0, cfg.m + 1.0, 801)

  sym_cache = {}

  def extra(post, thetas, ok, xs):
    if "fn" not in sym_cache:
      sym_cache["fn"] = jax.jit(jax.vmap(
          lambda th: metrics.symmetry_score(post["apply_fn"], post["subset"].merge(th), XS_SYM, TS_SYM)))
    sym = np.asarray(sym_cache["fn"](thetas))[ok]
    u = laplace_toy.field_grid(post["apply_fn"], post["subset"], thetas, XS_GRID, TS_GRID)[ok]
    return {"kl_target_vs_kde": float(metrics.kl_to_target_1d(laplace_toy.target_log_prob_fn(gmm),
                                                              jnp.asarray(xs[:, 0]), grid, cfg.kde_bandwidth)),
            "symmetry_score": laplace_toy._stats(sym),
            "field_variance_mean": float(np.mean(np.var(u, axis=0)))}

  return extra


def plot_fields(path, post, keep, eta):
  ts, xs = np.asarray(TS_GRID), np.asarray(XS_GRID)
  u_map = laplace_toy.field_grid(post["apply_fn"], post["subset"], post["theta_map"][None], XS_GRID, TS_GRID)[0]
  fig, ax = plt.subplots(2, 3, figsize=(15, 8))
  lim = np.percentile(np.abs(u_map), 98)
  for row, (name, key) in enumerate((("Euclidean", "theta_e"), ("Riemannian", "theta_r"))):
    u = laplace_toy.field_grid(post["apply_fn"], post["subset"], jnp.asarray(keep[key]), XS_GRID, TS_GRID)
    panels = ((u.mean(0), f"{name} LA: mean u(x,t), η={eta}", "RdBu_r", -lim, lim),
              (u.std(0), f"{name} LA: std over samples", "magma", 0, None),
              (u.mean(0) + u.mean(0)[:, ::-1], f"{name}: mean u(x,t)+u(−x,t) (0 if odd)", "RdBu_r", -lim / 4, lim / 4))
    for a, (val, title, cmap, lo, hi) in zip(ax[row], panels):
      im = a.pcolormesh(ts, xs, val.T, cmap=cmap, vmin=lo, vmax=hi if hi is not None else None, shading="auto")
      a.set(title=title, xlabel="t", ylabel="x")
      fig.colorbar(im, ax=a)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_sweep(path, rows, map_metrics):
  etas = [r["eta"] for r in rows if "euclidean" in r]
  get = lambda kind, f: [f(r[kind]) for r in rows if "euclidean" in r]
  panels = (("held-out FM loss", lambda m: m["heldout_fm_loss"]["mean"], "heldout_fm_loss"),
            ("KL(target ‖ KDE)", lambda m: m["kl_target_vs_kde"], "kl_target_vs_kde"),
            ("symmetry score E(θ)", lambda m: m["symmetry_score"]["mean"], None),
            ("M_1/3 (memorised fraction)", lambda m: m["memorisation"]["M_c"][3], None),
            ("field variance (mean over grid)", lambda m: m["field_variance_mean"], None))
  fig, ax = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
  for a, (title, f, _) in zip(ax, panels):
    a.plot(etas, get("euclidean", f), "o-", label="Euclidean LA")
    a.plot(etas, get("riemannian", f), "s-", label="Riemannian LA")
    a.axhline(f(map_metrics), color="k", ls=":", label="MAP")
    a.set(xscale="log", xlabel="η", title=title)
    a.set_xticks(etas, [f"{e:g}" for e in etas], minor=False)
    a.minorticks_off()
  ax[0].set_yscale("log")
  ax[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_samples(path, keep, gen_map, m):
  etas = sorted(keep)
  fig, ax = plt.subplots(1, len(etas) + 1, figsize=(3.3 * (len(etas) + 1), 3), sharey=True)
  bins = np.linspace(-m - 1, m + 1, 81)
  ax[0].hist(gen_map.ravel(), bins=bins, density=True, color="k", alpha=0.6)
  ax[0].set(title="MAP samples")
  for a, eta in zip(ax[1:], etas):
    a.hist(keep[eta]["gen_e"].ravel(), bins=bins, density=True, alpha=0.5, label="Euclidean")
    a.hist(keep[eta]["gen_r"].ravel(), bins=bins, density=True, alpha=0.5, label="Riemannian")
    a.set(title=f"η = {eta}")
  ax[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  cfg = _CONFIG.value
  out = common.make_run_dir("two_point_1d", workdir=cfg.workdir or None)
  k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed))
  train = data.two_point(cfg.m)
  post = laplace_toy.build_posterior(cfg, train, k_post)
  rows, map_metrics, keep, gen_map = laplace_toy.run_eta_sweep(post, cfg, k_sweep, make_extra_metrics(cfg))
  results = {
      "config": cfg.to_dict(), "map": {**post["info"], **map_metrics}, "sweep": rows,
      "claims": {"heldout_fm_loss": laplace_toy.comparison(rows, ("heldout_fm_loss", "mean")),
                 "symmetry_score": laplace_toy.comparison(rows, ("symmetry_score", "mean")),
                 "kl_target_vs_kde": laplace_toy.comparison(rows, ("kl_target_vs_kde",)),
                 "M_1/3": laplace_toy.comparison(rows, ("memorisation", "M_c", 3))}}
  figs = [os.path.join(out, f) for f in ("sweep.png", "fields.png", "samples.png")]
  plot_sweep(figs[0], rows, map_metrics)
  eta_f = min(keep, key=lambda e: abs(e - cfg.field_eta)) if keep else None
  if eta_f is not None:
    plot_fields(figs[1], post, keep[eta_f], eta_f)
    plot_samples(figs[2], keep, gen_map, cfg.m)
  js = common.write_json(os.path.join(out, "results.json"), results)
  print("figures: " + ", ".join(f for f in figs if os.path.exists(f)) + f"\nresults: {js}")
  for name, claim in results["claims"].items():
    vals = ", ".join(f"η={c['eta']}: E {c['euclidean']:.4g} / R {c['riemannian']:.4g}" for c in claim["per_eta"])
    print(f"{name}: Riemannian lower at all η = {claim['riemannian_lower_at_all_eta']} ({vals})")


if __name__ == "__main__":
  app.run(main)
