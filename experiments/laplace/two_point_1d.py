r"""Riemannian vs Euclidean Laplace over flow-matching weights on the 1D two-point set {−m, +m}.

For every η (paired: the same tangent velocities v for every sampler): KL between the target
GMM and a KDE of generated samples, the odd-symmetry score E(θ), M_c, held-out FM loss and the
velocity-field variance over posterior samples::

  python -m experiments.laplace.two_point_1d --config=experiments/laplace/configs/two_point_1d.py
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.laplace import pipeline
from memjax import data, metrics

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


def kl_label(std: float) -> str:
  """Key of the KL at target width ``std`` (e.g. ``0.1 -> "std=0.1"``)."""
  return f"std={float(std):g}"


@functools.partial(jax.jit, static_argnums=0)
def _symmetry(apply_fn, subset, xs, ts, thetas):
  """Symmetry score of every model of a stack (compiled once per network and shapes)."""
  return jax.vmap(lambda th: metrics.symmetry_score(apply_fn, subset.merge(th), xs, ts))(thetas)


def make_extra_metrics(cfg, fit):
  """KL(target ‖ KDE) at several target widths, symmetry score and field variance of a stack of
  models."""
  dtype = fit.theta_map.dtype
  g = _grids(dtype)
  targets = {
    kl_label(s): pipeline.target_log_prob_fn(data.two_point_gmm(cfg.data.m, s, dtype))
    for s in cfg.eval.kl_target_stds
  }
  grid = jnp.linspace(-cfg.data.m - 1.0, cfg.data.m + 1.0, 801, dtype=dtype)

  def extra(thetas, ok, xs):
    sym = np.asarray(_symmetry(fit.apply_fn, fit.subset, g["xs_sym"], g["ts_sym"], thetas))[ok]
    u = pipeline.field_grid(fit.apply_fn, fit.subset, thetas, g["xs"], g["ts"])[ok]
    x = jnp.asarray(xs[:, 0])
    kl = {
      name: float(metrics.kl_to_target_1d(lp, x, grid, cfg.eval.kde_bandwidth))
      for name, lp in targets.items()
    }
    return {
      "kl_target_vs_kde": kl,
      "symmetry_score": common.stats(sym),
      "field_variance_mean": float(np.mean(np.var(u, axis=0))),
    }

  return extra


# What each metric rewards (results.json ``metric_notes``).
METRIC_NOTES = {
  "heldout_fm_loss": "FM loss on fresh triples whose data points are samples of the target GMM "
  "(std = data.target_std), NOT the two training points: rewards a field that generalises to the "
  "target distribution; a model that only reproduces {-m, +m} is penalised.",
  "memorisation": "M_c = fraction of generated samples with d1^2 <= c d2^2 (the papers' squared "
  "criterion, keyed by c). In 1D with training points {-m, +m}, M_1/3 < 1 ONLY for samples with "
  "|x| < (2 - sqrt 3) m: lower M means mass between the modes, not less copying. "
  "M_c_true_samples is M_c of samples of the target GMM itself (the value a perfect sampler of "
  "the target gets; 1.0 here), M_c_excess = M_c - that baseline.",
  "kl_target_vs_kde": "KL(target || KDE of the samples) for several target widths: at a small "
  "width it rewards samples at the training points (memorisation), at a large width it rewards "
  "spread; read them together.",
  "symmetry_score": "E(theta) of the velocity field on an (x, t) grid: 0 for the exact odd "
  "two-point field u*; rewards fidelity to the exact (memorising) field.",
  "field_variance_mean": "variance of u over posterior samples: the posterior's spread in "
  "function space (not a quality score).",
  "tradeoff": "(M_MAP - M) / (held-out FM loss - its MAP value): memorisation removed per unit "
  "of held-out loss.",
}


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


def plot_sweep(path, rows, map_metrics, names, kl_key, c):
  """Each metric against η for every sampler, with the MAP value dotted."""
  panels = (
    ("held-out (target) FM loss", lambda m: m["heldout_fm_loss"]["mean"]),
    (f"KL(target ‖ KDE), {kl_key}", lambda m: m["kl_target_vs_kde"][kl_key]),
    ("symmetry score E(θ)", lambda m: m["symmetry_score"]["mean"]),
    (f"{pipeline.m_label(c)} (squared criterion)", lambda m: pipeline.m_c(m, c)),
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


def claim_paths(cfg) -> dict:
  """The claims' metric paths (M at the papers' c = 1/3, squared criterion)."""
  paths = {
    "heldout_fm_loss": ("heldout_fm_loss", "mean"),
    "symmetry_score": ("symmetry_score", "mean"),
  }
  for s in cfg.eval.kl_target_stds:
    paths[f"kl_target_vs_kde[{kl_label(s)}]"] = ("kl_target_vs_kde", kl_label(s))
  paths[pipeline.m_label(cfg.eval.headline_c)] = pipeline.m_path(cfg.eval.headline_c)
  return paths


def summarise(results: dict, workdir: str) -> str:
  """||∇L|| before/after refinement, then one line per claim and the correction agreement."""
  del workdir
  lines = pipeline.draw_and_claim_lines(
    results,
    lambda f: f" (||alpha theta*|| {f['prior_grad_norm']:.3g}); top Ritz {f['ritz_values'][0]:.4g}",
  )
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """MAP → Laplace fit(s) → η sweep on {−m, +m}; writes results.json and figures to ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(True):
    k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed))
    k_map, *keys = jax.random.split(k_post, 4)
    train = data.two_point(cfg.data.m)
    gmm = data.two_point_gmm(cfg.data.m, cfg.data.target_std, jnp.float64)
    k_held = jax.random.fold_in(keys[2], 1)  # the target samples (keys[2]: their triples)
    heldout, _ = data.sample_mixture(k_held, gmm, cfg.eval.num_heldout_samples)
    apply_fn, params, map_info = pipeline.train_mlp_map(cfg, train, k_map)
    draws, agreement = pipeline.run_draws(
      cfg,
      apply_fn,
      params,
      train,
      heldout,
      tuple(keys),
      k_sweep,
      lambda f: make_extra_metrics(cfg, f),
      jnp.float64,
    )
    fit, sweep = draws[0].fit, draws[0].sweep
    rows = sweep.rows
    paths = claim_paths(cfg)
    claims_fn = lambda r: pipeline.claims(r, paths, cfg.eval.compare)
    names = tuple(cfg.posterior.samplers)
    results = pipeline.results_block(cfg, METRIC_NOTES, map_info, draws, agreement, claims_fn)
    figs = [os.path.join(workdir, f) for f in FIGURES]
    kl_key = kl_label(cfg.data.target_std)
    plot_sweep(figs[0], rows, sweep.map_metrics, names, kl_key, cfg.eval.headline_c)
    if sweep.keep:
      eta_f = min(sweep.keep, key=lambda e: abs(e - cfg.eval.field_eta))
      plot_fields(figs[1], fit, sweep.keep[eta_f], eta_f)
      plot_samples(figs[2], sweep.keep, sweep.gen_map, cfg.data.m)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURES)
