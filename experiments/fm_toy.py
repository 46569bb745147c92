r"""Flow matching on the 1D two-point set and a 2D Gaussian-mixture subset.

Trains, generates with diffrax, reports the memorised fraction M_c, the error of the learned 1D
field against the exact odd field u*, and writes a figure and ``results.json``::

  python -m experiments.fm_toy --config=experiments/configs/fm_toy.py
  python -m experiments.fm_toy --config=experiments/configs/fm_toy.py:smoke --config.workdir=/tmp/x
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from experiments import common, plotting
from memjax import data, memorisation, sampling

# The default ``--config`` (see :func:`experiments.common.main`).
CONFIG = os.path.join(os.path.dirname(__file__), "configs", "fm_toy.py")

FIGURE = "fm_toy.png"


def field_error(
  apply_fn, params, m: float, ts=np.linspace(0.0, 0.9, 46), xs=np.linspace(-2.0, 2.0, 81)
):
  """Relative L2 error of u_θ against u* on a (t, x) grid, plain and weighted by p_t(x).

  Returns ``(numbers, (tt, xx, u, u_star))`` with the grid values for the figure.
  """
  tt, xx = np.meshgrid(ts, xs, indexing="ij")
  t, x = jnp.asarray(tt.ravel()), jnp.asarray(xx.ravel())[:, None]
  u = np.asarray(apply_fn(params, x.astype(jnp.float32), t.astype(jnp.float32)))[:, 0]
  u_star = np.asarray(data.two_point_velocity(x[:, 0], t, m))
  w = np.asarray(data.two_point_density(x[:, 0], t, m))
  err = lambda wt: float(np.sqrt(np.sum(wt * (u - u_star) ** 2) / np.sum(wt * u_star**2)))
  numbers = {
    "rel_l2": err(np.ones_like(w)),
    "rel_l2_density_weighted": err(w),
    "t_range": [float(ts[0]), float(ts[-1])],
    "x_range": [float(xs[0]), float(xs[-1])],
  }
  return numbers, (tt, xx, u, u_star)


def run_dataset(name, train, sub, eval_cfg, key, progress=True):
  """Fit the MLP of section ``sub`` on ``train``, generate, and measure memorisation.

  Returns ``(numbers, apply_fn, params, generated (N, D), ratios r (N_ok,))``.
  """
  k_fit, k_noise = jax.random.split(key)
  with common.Timer() as t_fit:
    apply_fn, params, losses = common.fit_mlp(train, sub.model, sub.train, k_fit, progress=progress)
  x0 = jax.random.normal(k_noise, (eval_cfg.num_samples, train.shape[1]), train.dtype)
  with common.Timer() as t_gen:
    gen = sampling.generate(
      apply_fn, params, x0, solver=eval_cfg.solver, rtol=eval_cfg.rtol, atol=eval_cfg.atol
    )
    gen.x.block_until_ready()
  ok = np.asarray(gen.success)
  r = memorisation.nn_ratio(gen.x[ok], train)
  res = {
    "num_train": int(train.shape[0]),
    "train_seconds": t_fit.seconds,
    "generate_seconds": t_gen.seconds,
    "final_train_loss": float(np.mean(losses[-100:])),
    "solver": sampling.summarise(gen),
    "memorisation": memorisation.summary(r, eval_cfg.cs),
  }
  logging.info(
    "%s: M_1/3 = %.3f, solver %s",
    name,
    float(memorisation.memorised_fraction(r, [1 / 3])[0]),
    res["solver"],
  )
  return res, apply_fn, params, np.asarray(gen.x), np.asarray(r)


def plot(path, tp, gm):
  """1D: learned vs exact field and the samples; 2D: samples coloured by r, r histogram, M_c."""
  fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
  (tt, xx, u, u_star), samples1, train1, m = tp
  lim = np.percentile(np.abs(u_star), 98)
  for a, val, title in ((ax[0, 0], u, "learned u_θ(x,t)"), (ax[0, 1], u_star, "exact u*(x,t)")):
    im = a.pcolormesh(
      tt, xx, val.reshape(tt.shape), cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto"
    )
    a.set(xlabel="t", ylabel="x", title=title)
    fig.colorbar(im, ax=a)
  a = ax[0, 2]
  a.hist(samples1[:, 0], bins=80, density=True, alpha=0.7, label="generated")
  for v in train1[:, 0]:
    a.axvline(v, color="k", ls="--", lw=1)
  a.set(title="1D: generated samples (dashed: train)", xlabel="x")
  a.legend()
  samples2, train2, r2, truth2 = gm
  a = ax[1, 0]
  a.scatter(*truth2.T, s=3, c="0.8", label="data distribution")
  sc = a.scatter(
    *samples2.T, s=4, c=r2, cmap="viridis_r", vmin=0, vmax=1, label="generated (colour: r)"
  )
  a.scatter(*train2.T, s=40, marker="x", c="r", label="training points")
  fig.colorbar(sc, ax=a)
  a.set(title="2D mixture: samples coloured by ratio r", aspect="equal")
  a.legend(fontsize=7, loc="upper right")
  a = ax[1, 1]
  a.hist(r2, bins=40, range=(0, 1), color="C2")
  a.axvline(1 / 3, color="k", ls="--", label="c = 1/3")
  a.set(title="2D: histogram of r = d1/d2", xlabel="r")
  a.legend()
  a = ax[1, 2]
  cs = np.linspace(0.01, 1, 100)
  a.plot(cs, [(r2 <= c).mean() for c in cs], label="2D mixture")
  a.set(title="memorised fraction M_c", xlabel="c", ylabel="M_c")
  a.legend()
  plotting.save(fig, path)


def summarise(results: dict, workdir: str) -> str:
  """The field error and M_1/3 of both data sets."""
  del workdir
  err = results["two_point"]["field_error_vs_exact"]
  m13 = {
    k: results[k]["memorisation"]["M_c"][memorisation.c_label(1 / 3)]
    for k in ("two_point", "gmm2d")
  }
  return (
    f"two_point: u* rel. L2 error {err['rel_l2']:.3f} "
    f"(density-weighted {err['rel_l2_density_weighted']:.3f}); "
    f"M_1/3 two_point {m13['two_point']:.3f}, gmm2d {m13['gmm2d']:.3f}"
  )


def run(cfg, workdir: str) -> dict:
  """Both data sets end to end; writes results.json and the figure into ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  train1 = data.two_point(cfg.two_point.m)
  res1, u1, p1, s1, _ = run_dataset("two_point", train1, cfg.two_point, cfg.eval, k1, cfg.progress)
  err, grid = field_error(u1, p1, cfg.two_point.m)
  res1["field_error_vs_exact"] = err
  logging.info("two_point: relative L2 error vs u* = %s", err)

  g = cfg.gmm2d
  gmm = data.ring_mixture(g.num_modes, g.radius, g.std)
  train2, _ = data.sample_mixture(k2, gmm, g.num_train)
  res2, _, _, s2, r2 = run_dataset("gmm2d", train2, g, cfg.eval, k3, cfg.progress)
  truth2, _ = data.sample_mixture(k4, gmm, 3000)

  results = {"config": cfg.to_dict(), "two_point": res1, "gmm2d": res2}
  plot(
    os.path.join(workdir, FIGURE),
    (grid, s1, np.asarray(train1), cfg.two_point.m),
    (s2, np.asarray(train2), r2, np.asarray(truth2)),
  )
  common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURE)
