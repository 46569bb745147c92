r"""Sharpness detection and SAIL on a class-conditional, memorising digits model (seed 003).

Training set (:func:`memjax.data.duplicated_digits`): label 0 = many distinct images of one digit
(generalised); label 1 = a few distinct images of another digit plus ONE image repeated ~100×.
A :class:`memjax.nets.CondMLPField` is trained by conditional FM with label dropout 0.2 and sampled
with classifier-free guidance (scale 5) by Euler steps. Samples with ``d1/d2 ≤ 1/3`` against the
distinct training images are memorised. Detectors at the first step ``t_1 = 1/num_steps`` (state
after one Euler step): Wen et al. ``||ε̂(x,c) − ε̂(x,∅)||``, its velocity analogue and
``||H^Δ s^Δ||²``. SAIL (label-1 noise) minimises ``||s^Δ(x + δ s^Δ) − s^Δ||² + α||x||²`` with
``s^Δ = s^Δ(·, t_s, 1)``; M_{1/3} and a quality proxy (mean distance to the nearest HELD-OUT image
of the class) are compared with plain noise::

  python -m experiments.sharpness_digits --config=experiments/configs/sharpness_digits.py
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
import optax  # noqa: E402

from experiments import common  # noqa: E402
from experiments.sharpness_common import detection, euler_path, profile_scores, roc_points  # noqa: E402
from memjax import data, memorisation, nets, paths, sharpness, training  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "sharpness_digits.py"))


def fit(dd, cfg, key):
  M = cfg.model
  k_init, k_train = jax.random.split(key)
  module = nets.CondMLPField(dim=64, num_classes=2, hidden=tuple(M.hidden), time_dim=M.time_dim)
  u = nets.cond_velocity_fn(module)
  params = nets.init_cond_params(module, k_init, 64)
  loss = training.cond_fm_objective(u, jnp.asarray(dd.x), jnp.asarray(dd.y), module.null_label, M.batch_size,
                                    cfg.p_uncond)
  opt = optax.adam(optax.cosine_decay_schedule(M.lr, M.steps, alpha=0.05))
  res = training.train(loss, params, opt, M.steps, k_train, chunk_size=min(500, M.steps), progress=cfg.progress)
  return u, module.null_label, res.state.params, res.losses


def plot(path, ts, prof, mem, det_scores, sail_losses, plain, sailed):
  fig = plt.figure(figsize=(18, 4.6))
  a = fig.add_subplot(1, 4, 1)
  for sel, name, col in ((~mem, "not memorised", "C0"), (mem, "memorised", "C1")):
    if sel.any():
      a.plot(ts, np.median(np.asarray(prof.bottom[:, sel, 0]), 1), "o-", color=col, label=f"λ_min, {name}")
      a.plot(ts, np.median(-np.asarray(prof.trace[:, sel]), 1) / 64, "s--", color=col, label=f"−tr H / D, {name}")
  a.set(xlabel="t (data at 1)", yscale="symlog", title="conditional Hessian, ½(H+Hᵀ)")
  a.legend(fontsize=7)
  a = fig.add_subplot(1, 4, 2)
  if mem.any() and (~mem).any():
    for name, s in det_scores.items():
      a.plot(*roc_points(s, mem), label=name)
  a.plot([0, 1], [0, 1], "k:", lw=0.8)
  a.set(xlabel="FPR", ylabel="TPR", title="ROC, first sampling step")
  a.legend(fontsize=7)
  a = fig.add_subplot(1, 4, 3)
  a.semilogy(np.asarray(sail_losses).T, color="C2", alpha=0.3, lw=0.8)
  a.set(xlabel="Adam iteration", ylabel="L(x_T)", title="SAIL trajectories (label 1)")
  for j in range(8):
    for row, imgs in enumerate((plain, sailed)):
      b = fig.add_subplot(4, 32, 25 + j + 32 * row * 2 - (0 if row == 0 else 0))
      b.imshow(np.asarray(imgs[j]).reshape(8, 8), cmap="gray", vmin=-1, vmax=1)
      b.axis("off")
  fig.suptitle("right: label-1 samples from plain noise (top) and SAIL noise (bottom)", fontsize=9)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  out = common.make_run_dir("sharpness_digits", workdir=cfg.workdir or None)
  k_data, k_fit, k_noise, k_prof = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  dd = data.duplicated_digits(k_data, cfg.general_class, cfg.dup_class, cfg.n_general, cfg.n_dup_class_distinct,
                              cfg.copies)
  with common.Timer() as t_fit:
    u, null, params, losses = fit(dd, cfg, k_fit)
  guided = training.cfg_velocity(u, cfg.guidance, null)
  sched = paths.linear_fm()
  n = cfg.num_samples_per_class
  y = jnp.repeat(jnp.arange(2), n)
  x0 = jax.random.normal(k_noise, (2 * n, 64))
  gen = jax.jit(lambda x, yy: euler_path(lambda z, t: guided(params, z, t, yy), x, cfg.num_steps))
  path = gen(x0, y)
  unique = jnp.asarray(dd.unique)
  mem = np.asarray(memorisation.nn_ratio(path[-1], unique) <= cfg.mem_c)
  cs = sharpness.point_cond_score(functools.partial(u, params), sched, "velocity")
  uf = lambda x, t, c: u(params, x[None], t[None], jnp.asarray(c)[None])[0]
  epsf = lambda x, t, c: paths.convert(sched, x, t, uf(x, t, c), "velocity", "eps")
  t1 = jnp.asarray(1.0 / cfg.num_steps)
  x1 = path[1]
  det_scores = {
      "hs_detector": np.asarray(jax.vmap(lambda x, c: sharpness.hs_detector(cs, x, t1, c, null))(x1, y)),
      "wen_eps": np.asarray(jax.vmap(lambda x, c: sharpness.wen_metric(epsf, x, t1, c, null))(x1, y)),
      "wen_velocity": np.asarray(jax.vmap(lambda x, c: sharpness.wen_metric(uf, x, t1, c, null))(x1, y)),
  }
  idx = np.rint(np.asarray(cfg.t_grid) * cfg.num_steps).astype(int)
  ts = jnp.asarray(idx / cfg.num_steps, x0.dtype)
  # Spectra of the conditional score's Hessian along the trajectories (label of each sample).
  with common.Timer() as t_prof:
    prof = sharpness.Profile(*(jnp.concatenate(parts, 1) for parts in zip(*[
        jax.jit(lambda xs, k, c=c: sharpness.sharpness_profile(lambda x, t: cs(x, t, c), xs, ts, k, k=cfg.k,
                                                                 num_iters=cfg.lanczos_iters))(
            path[idx][:, c * n:(c + 1) * n], jax.random.fold_in(k_prof, c)) for c in (0, 1)])))
  prof_scores = profile_scores(prof)
  det = {name: detection(s, mem) for name, s in det_scores.items()}
  det.update({f"{name}_t{float(t):g}": detection(s[i], mem) for name, s in prof_scores.items()
              for i, t in enumerate(ts)})
  sail_res, sail_out = run_sail(cfg, cs, null, gen, x0[n:], unique, dd)
  results = {
      "config": cfg.to_dict(), "train_seconds": t_fit.seconds, "profile_seconds": t_prof.seconds,
      "final_train_loss": float(np.mean(losses[-200:])), "num_train": int(len(dd.x)),
      "num_distinct_train": int(len(dd.unique)),
      "memorised_fraction": {"all": float(mem.mean()), "label_0": float(mem[:n].mean()),
                             "label_1": float(mem[n:].mean())},
      "detection_first_step": {k: det[k] for k in det_scores}, "detection_profile_over_t": det,
      "sail": sail_out,
  }
  fig = os.path.join(out, "sharpness_digits.png")
  plot(fig, np.asarray(ts), prof, mem, det_scores, sail_res[1].losses, path[-1][n:], sail_res[0])
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"figure: {fig}\nresults: {js}")
  print(f"memorised {results['memorised_fraction']}; first-step detection {results['detection_first_step']}")
  print(f"SAIL: {sail_out}")


def run_sail(cfg, cs, null, gen, x0, unique, dd):
  """SAIL on label-1 noise ``x0 (n, 64)``; returns ``((samples, SailResult), summary dict)``."""
  S = cfg.sail
  t_s = jnp.asarray(S.t_s, x0.dtype)
  g = lambda x: sharpness.score_delta(cs, x, t_s, 1, null)
  with common.Timer() as t_sail:
    res = jax.jit(lambda x: sharpness.sail(g, x, alpha=S.alpha, delta=S.delta, threshold=S.threshold, lr=S.lr,
                                           max_iters=S.max_iters))(x0)
    res.x.block_until_ready()
  y1 = jnp.ones((x0.shape[0],), jnp.int32)
  plain, sailed = gen(x0, y1)[-1], gen(res.x, y1)[-1]
  held = jnp.asarray(dd.held_out[1])
  r = {k: np.asarray(memorisation.nn_ratio(s, unique)) for k, s in (("plain", plain), ("sail", sailed))}
  dup = jnp.asarray(dd.dup_image)[None]
  summary = {
      "t_s": float(t_s), "seconds": t_sail.seconds,
      "M_c_plain": float(np.mean(r["plain"] <= cfg.mem_c)), "M_c_sail": float(np.mean(r["sail"] <= cfg.mem_c)),
      "quality_mean_dist_to_nearest_heldout": {
          k: float(jnp.mean(memorisation.nearest_two(s, held).d1)) for k, s in (("plain", plain), ("sail", sailed))},
      "mean_dist_to_duplicated_image": {
          k: float(jnp.mean(jnp.linalg.norm(s - dup, axis=1))) for k, s in (("plain", plain), ("sail", sailed))},
      "mean_iterations": float(np.mean(np.asarray(res.iterations))),
      "converged_fraction": float(np.mean(np.asarray(res.converged))),
      "loss_before_median": float(np.median(np.asarray(res.losses[:, 0]))),
      "loss_after_median": float(np.median(np.asarray(res.losses[:, -1]))),
      "mean_sq_norm_x0": {"plain": float(jnp.mean(jnp.sum(x0**2, 1))), "sail": float(jnp.mean(jnp.sum(res.x**2, 1)))},
  }
  return (sailed, res), summary


if __name__ == "__main__":
  app.run(main)
