r"""Flow matching on the 1D two-point set and a 2D Gaussian-mixture subset.

Trains, generates with diffrax, reports the memorised fraction M_c, the error of
the learned 1D field against the exact odd field u*, and writes a figure and
``results.json``::

  python -m experiments.fm_toy --config=experiments/configs/fm_toy.py
  python -m experiments.fm_toy --config=experiments/configs/fm_toy.py:smoke --config.workdir=/tmp/x
"""
from __future__ import annotations

import os

from absl import app, logging
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from experiments import common  # noqa: E402
from memjax import data, memorisation, sampling  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs", "fm_toy.py"))


def field_error(apply_fn, params, m: float, ts=np.linspace(0.0, 0.9, 46), xs=np.linspace(-2.0, 2.0, 81)):
  """Relative L2 error of u_θ against u* on a (t, x) grid: plain and weighted by the marginal density p_t(x)."""
  tt, xx = np.meshgrid(ts, xs, indexing="ij")
  t, x = jnp.asarray(tt.ravel()), jnp.asarray(xx.ravel())[:, None]
  u = np.asarray(apply_fn(params, x.astype(jnp.float32), t.astype(jnp.float32)))[:, 0]
  u_star = np.asarray(data.two_point_velocity(x[:, 0], t, m))
  w = np.asarray(data.two_point_density(x[:, 0], t, m))
  err = lambda wt: float(np.sqrt(np.sum(wt * (u - u_star) ** 2) / np.sum(wt * u_star**2)))
  return {"rel_l2": err(np.ones_like(w)), "rel_l2_density_weighted": err(w),
          "t_range": [float(ts[0]), float(ts[-1])], "x_range": [float(xs[0]), float(xs[-1])]}, (tt, xx, u, u_star)


def run_dataset(name, train, cfg, sub, key):
  k_fit, k_noise = jax.random.split(key)
  with common.Timer() as t_fit:
    apply_fn, params, losses, module = common.fit_fm(
        train, key=k_fit, hidden=sub.hidden, time_dim=sub.time_dim, steps=sub.steps,
        batch_size=sub.batch_size, lr=sub.lr, ema_decay=sub.ema_decay, progress=cfg.progress)
  x0 = jax.random.normal(k_noise, (cfg.num_samples, train.shape[1]), train.dtype)
  with common.Timer() as t_gen:
    gen = sampling.generate(apply_fn, params, x0, solver=cfg.solver, rtol=cfg.rtol, atol=cfg.atol)
    gen.x.block_until_ready()
  ok = np.asarray(gen.success)
  r = memorisation.nn_ratio(gen.x[ok], train)
  res = {"num_train": int(train.shape[0]), "train_seconds": t_fit.seconds, "generate_seconds": t_gen.seconds,
         "final_train_loss": float(np.mean(losses[-100:])), "solver": sampling.summarise(gen),
         "memorisation": memorisation.summary(r, cfg.cs)}
  logging.info("%s: M_1/3 = %.3f, solver %s", name, float(memorisation.memorised_fraction(r, [1 / 3])[0]),
               res["solver"])
  return res, apply_fn, params, np.asarray(gen.x), np.asarray(r), losses


def plot(path, tp, gm):
  fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
  (tt, xx, u, u_star), samples1, train1, m = tp
  lim = np.percentile(np.abs(u_star), 98)
  for a, val, title in ((ax[0, 0], u, "learned u_θ(x,t)"), (ax[0, 1], u_star, "exact u*(x,t)")):
    im = a.pcolormesh(tt, xx, val.reshape(tt.shape), cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
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
  sc = a.scatter(*samples2.T, s=4, c=r2, cmap="viridis_r", vmin=0, vmax=1, label="generated (colour: r)")
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
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  out = common.make_run_dir("fm_toy", workdir=cfg.workdir or None)
  key = jax.random.PRNGKey(cfg.seed)
  k1, k2, k3, k4 = jax.random.split(key, 4)

  train1 = data.two_point(cfg.two_point.m)
  res1, u1, p1, s1, _, _ = run_dataset("two_point", train1, cfg, cfg.two_point, k1)
  err, grid = field_error(u1, p1, cfg.two_point.m)
  res1["field_error_vs_exact"] = err
  logging.info("two_point: relative L2 error vs u* = %s", err)

  g = cfg.gmm2d
  gmm = data.ring_mixture(g.num_modes, g.radius, g.std)
  train2, _ = data.sample_mixture(k2, gmm, g.num_train)
  res2, _, _, s2, r2, _ = run_dataset("gmm2d", train2, cfg, g, k3)
  truth2, _ = data.sample_mixture(k4, gmm, 3000)

  results = {"config": cfg.to_dict(), "two_point": res1, "gmm2d": res2}
  fig = os.path.join(out, "fm_toy.png")
  plot(fig, (grid, s1, np.asarray(train1), cfg.two_point.m), (s2, np.asarray(train2), r2, np.asarray(truth2)))
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"figure: {fig}\nresults: {js}")
  print(f"two_point: u* rel. L2 error {err['rel_l2']:.3f} (density-weighted {err['rel_l2_density_weighted']:.3f}); "
        f"M_1/3 two_point {res1['memorisation']['M_c'][3]:.3f}, gmm2d {res2['memorisation']['M_c'][3]:.3f}")


if __name__ == "__main__":
  app.run(main)
