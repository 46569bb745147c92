r"""Sharpness of log p_t as a memorisation detector, and SAIL, on a 2D sharp+broad mixture (seed 003).

Training set: ``n_train`` draws of ``0.05 N(μ_s, 0.01²I) + 0.95 N(0, I)`` where every sharp-mode draw
is ONE duplicated point. An unconditional FM model is trained; generated samples are labelled
memorised when ``d1/d2 ≤ 1/3`` against the distinct training points. Along each Euler trajectory
we measure the spectrum of ``½(H + Hᵀ)``, ``tr H`` and ``||s||²`` and score detection (AUROC,
TPR@1%FPR). SAIL optimises the noise on ``L(x0) = ||g(x0 + δg(x0)) − g(x0)||² + α||x0||²`` with
``g(x0) = s(Φ_{0→t_s}(x0), t_s)``, the score at the state the Euler flow reaches at ``t_s``::

  python -m experiments.sharpness_toy --config=experiments/configs/sharpness_toy.py
"""
from __future__ import annotations

import functools
import os

from absl import app
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from experiments import common  # noqa: E402
from experiments.sharpness_common import detection, euler_path, profile_scores, roc_points  # noqa: E402
from memjax import data, memorisation, paths, sharpness  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "sharpness_toy.py"))


def plot(path, ts, prof, mem, scores_t, samples, sail_samples, sail_losses, train):
  fig, ax = plt.subplots(1, 4, figsize=(19, 4.3))
  for sel, name, col in ((~mem, "not memorised", "C0"), (mem, "memorised", "C1")):
    if sel.any():
      ax[0].plot(ts, np.median(np.asarray(prof.bottom[:, sel, 0]), 1), "o-", color=col, label=f"λ_min, {name}")
      ax[0].plot(ts, np.median(np.asarray(prof.top[:, sel, 0]), 1), "s--", color=col, label=f"λ_max, {name}")
  ax[0].set(xlabel="t (data at 1)", ylabel="median eigenvalue of ½(H+Hᵀ)", yscale="symlog", title="Hessian spectrum")
  ax[0].legend(fontsize=7)
  if mem.any() and (~mem).any():
    for name, s in scores_t.items():
      fpr, tpr = roc_points(s, mem)
      ax[1].plot(fpr, tpr, label=name)
  ax[1].plot([0, 1], [0, 1], "k:", lw=0.8)
  ax[1].set(xlabel="FPR", ylabel="TPR", title="ROC at the detection time")
  ax[1].legend(fontsize=7)
  ax[2].semilogy(np.asarray(sail_losses).T[:, :50], color="C2", alpha=0.3, lw=0.8)
  ax[2].set(xlabel="Adam iteration", ylabel="L(x0)", title="SAIL trajectories")
  ax[3].scatter(*np.asarray(samples).T, s=3, alpha=0.5, label="plain noise")
  ax[3].scatter(*np.asarray(sail_samples).T, s=3, alpha=0.5, label="SAIL noise")
  ax[3].scatter(*np.asarray(train).T, s=12, c="k", marker="x", label="train (distinct)")
  ax[3].set(title="samples")
  ax[3].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  out = common.make_run_dir("sharpness_toy", workdir=cfg.workdir or None)
  k_data, k_fit, k_noise, k_prof, k_ref = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
  gmm = data.sharp_broad_mixture(tuple(cfg.sharp_mean), cfg.sharp_std, 1.0, cfg.sharp_weight)
  train, comp, unique = data.duplicated_sample(k_data, gmm, cfg.num_train)
  M, S = cfg.model, cfg.sail
  with common.Timer() as t_fit:
    apply_fn, params, losses, _ = common.fit_fm(train, key=k_fit, hidden=M.hidden, time_dim=M.time_dim,
                                                steps=M.steps, batch_size=M.batch_size, lr=M.lr,
                                                progress=cfg.progress)
  field = functools.partial(apply_fn, params)
  sched = paths.linear_fm()
  score = sharpness.point_score(field, sched, "velocity")
  x0 = jax.random.normal(k_noise, (cfg.num_samples, 2), train.dtype)
  path = jax.jit(functools.partial(euler_path, field, num_steps=cfg.num_steps))(x0)
  samples = path[-1]
  mem = np.asarray(memorisation.nn_ratio(samples, unique) <= cfg.mem_c)
  idx = np.rint(np.asarray(cfg.t_grid) * cfg.num_steps).astype(int)
  ts = jnp.asarray(idx / cfg.num_steps, train.dtype)
  with common.Timer() as t_prof:
    prof = jax.jit(lambda xs, k: sharpness.sharpness_profile(score, xs, ts, k, k=1, num_iters=2))(path[idx], k_prof)
  scores = profile_scores(prof)
  det = {name: {f"{float(t):g}": detection(s[i], mem) for i, t in enumerate(ts)} for name, s in scores.items()}
  i_det = int(np.argmin(np.abs(np.asarray(ts) - cfg.t_detect)))
  # SAIL: g(x0) = s(Φ_{0→t_s}(x0), t_s) through n_s Euler steps.
  n_s = max(1, int(round(S.t_s * cfg.num_steps)))
  t_s = n_s / cfg.num_steps
  flow = lambda x: euler_path(field, x[None], n_s, t_s)[-1, 0]
  g = lambda x: score(flow(x), jnp.asarray(t_s, x.dtype))
  with common.Timer() as t_sail:
    res = jax.jit(lambda x: sharpness.sail(g, x, alpha=S.alpha, delta=S.delta, threshold=S.threshold,
                                           lr=S.lr, max_iters=S.max_iters))(x0)
    res.x.block_until_ready()
  sail_samples = jax.jit(functools.partial(euler_path, field, num_steps=cfg.num_steps))(res.x)[-1]
  r_plain, r_sail = (memorisation.nn_ratio(s, unique) for s in (samples, sail_samples))
  ref, _ = data.sample_mixture(k_ref, gmm, 2000)
  # Lemma E||s||² = −E tr H on y ~ p_t of the training distribution (y = t x + (1 − t) ε): the learned score's gap.
  k_lem_x, k_lem_z = jax.random.split(k_ref)
  xl = train[jax.random.randint(k_lem_x, (cfg.num_samples,), 0, train.shape[0])]
  zl = jax.random.normal(k_lem_z, xl.shape, xl.dtype)
  lemma = {}
  for t in (0.3, 0.5, 0.7, 0.9):
    chk = sharpness.lemma_check(score, sched.sample(xl, zl, jnp.full((xl.shape[0],), t, xl.dtype)), t)
    lemma[f"{t:g}"] = {k: float(v) for k, v in chk._asdict().items()}
  quality = lambda s: float(jnp.mean(memorisation.nearest_two(s, ref).d1))
  results = {
      "config": cfg.to_dict(), "train_seconds": t_fit.seconds, "profile_seconds": t_prof.seconds,
      "sail_seconds": t_sail.seconds, "final_train_loss": float(np.mean(losses[-200:])),
      "num_train": int(train.shape[0]), "num_distinct_train": int(unique.shape[0]),
      "num_duplicates_of_sharp_point": int(np.sum(np.asarray(comp) == 0)),
      "memorised_fraction": float(mem.mean()), "t_grid": np.asarray(ts).tolist(), "t_detect": float(ts[i_det]),
      "detection_at_t_detect": {name: det[name][f"{float(ts[i_det]):g}"] for name in det},
      "detection_over_t": det,
      "lemma_gap_trained_model": lemma,
      "median_lambda_min": {"memorised": np.median(np.asarray(prof.bottom[:, mem, 0]), 1).tolist() if mem.any() else None,
                            "not_memorised": np.median(np.asarray(prof.bottom[:, ~mem, 0]), 1).tolist()},
      "sail": {"t_s": t_s, "M_c_plain": float(np.mean(np.asarray(r_plain) <= cfg.mem_c)),
               "M_c_sail": float(np.mean(np.asarray(r_sail) <= cfg.mem_c)),
               "mean_iterations": float(np.mean(np.asarray(res.iterations))),
               "converged_fraction": float(np.mean(np.asarray(res.converged))),
               "loss_before_median": float(np.median(np.asarray(res.losses[:, 0]))),
               "loss_after_median": float(np.median(np.asarray(res.losses[:, -1]))),
               "quality_mean_nn_dist_to_fresh_data": {"plain": quality(samples), "sail": quality(sail_samples)},
               "mean_sq_norm_x0": {"plain": float(jnp.mean(jnp.sum(x0**2, 1))),
                                   "sail": float(jnp.mean(jnp.sum(res.x**2, 1)))}},
  }
  fig = os.path.join(out, "sharpness_toy.png")
  plot(fig, np.asarray(ts), prof, mem, {n: s[i_det] for n, s in scores.items()}, samples, sail_samples,
       res.losses, unique)
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"figure: {fig}\nresults: {js}")
  print(f"memorised {mem.mean():.3f}; detection at t={float(ts[i_det]):g}: {results['detection_at_t_detect']}")
  print(f"SAIL: {results['sail']}")


if __name__ == "__main__":
  app.run(main)
