r"""Sharpness of log p_t as a memorisation detector, and SAIL, on a 2D sharp+broad mixture.

Training set: ``num_train`` draws of ``0.05 N(μ_s, 0.01²I) + 0.95 N(0, I)`` where every
sharp-mode draw is ONE duplicated point. An unconditional FM model is trained; generated samples
are labelled memorised when ``d1/d2 ≤ 1/3`` against the distinct training points. Along each
Euler trajectory we measure the spectrum of ``½(H + Hᵀ)``, ``tr H`` and ``||s||²`` and score
detection (AUROC, TPR@1%FPR). SAIL arms (:func:`experiments.sharpness.pipeline.sail_arms`):
``g`` the ε-prediction ``−σ s(·, t_s)`` (``sail``), ``g = s`` (``sail_score``), iterates projected
onto ``||x|| = √D`` (``sail_shell``) and the rejection control (``rejection``), evaluated at
``y = Φ_{0→t_s}(x0)``, the Euler state at ``t_s``; per arm on accepted latents: M_c,
``||x_T||²/D``, compute and the mean distance to fresh draws of the true mixture::

  python -m experiments.sharpness.toy --config=experiments/sharpness/configs/toy.py
  python -m experiments.sharpness.toy --config=experiments/sharpness/configs/toy.py:smoke \
      --config.workdir=/tmp/x
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.sharpness import pipeline
from memjax import data, memorisation, metrics, neighbours, paths, sharpness

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "toy.py")

FIGURE = "sharpness_toy.png"
RAW = "sail_arms.npz"  # per-sample arrays of the SAIL arms, read by outcome.py
LEMMA_TIMES = (0.3, 0.5, 0.7, 0.9)


def plot(path, ts, prof, mem, scores_t, samples, sail_samples, sail_losses, train):
  fig, ax = plt.subplots(1, 4, figsize=(19, 4.3))
  for sel, name, col in plotting.memorisation_groups(mem):
    ax[0].plot(
      ts,
      np.median(np.asarray(prof.bottom[:, sel, 0]), 1),
      "o-",
      color=col,
      label=f"λ_min, {name}",
    )
    ax[0].plot(
      ts, np.median(np.asarray(prof.top[:, sel, 0]), 1), "s--", color=col, label=f"λ_max, {name}"
    )
  ax[0].set(
    xlabel="t (data at 1)",
    ylabel="median eigenvalue of ½(H+Hᵀ)",
    yscale="symlog",
    title="Hessian spectrum",
  )
  ax[0].legend(fontsize=7)
  plotting.roc_panel(ax[1], scores_t, mem, "ROC at the detection time")
  ax[2].semilogy(np.asarray(sail_losses).T[:, :50], color="C2", alpha=0.3, lw=0.8)
  ax[2].set(xlabel="Adam iteration", ylabel="L(x0)", title="SAIL trajectories")
  ax[3].scatter(*np.asarray(samples).T, s=3, alpha=0.5, label="plain noise")
  ax[3].scatter(*np.asarray(sail_samples).T, s=3, alpha=0.5, label="SAIL noise")
  ax[3].scatter(*np.asarray(train).T, s=12, c="k", marker="x", label="train (distinct)")
  ax[3].set(title="samples")
  ax[3].legend(fontsize=7)
  plotting.save(fig, path)


def lemma_gaps(score, sched, train, num, key) -> dict:
  """``E||s||² = −E tr H`` on ``y ~ p_t`` of the training set (``y = t x + (1 − t) ε``), per t."""
  k_x, k_z = jax.random.split(key)
  xl = train[jax.random.randint(k_x, (num,), 0, train.shape[0])]
  zl = jax.random.normal(k_z, xl.shape, xl.dtype)
  out = {}
  for t in LEMMA_TIMES:
    ys = sched.sample(xl, zl, jnp.full((xl.shape[0],), t, xl.dtype))
    out[f"{t:g}"] = common.to_jsonable(sharpness.lemma_check(score, ys, t))
  return out


# Closing lines of the CLI, ``SUMMARY.format_map(results)``: memorised fraction, detection at
# ``t_detect`` and the SAIL summary.
SUMMARY = (
  "memorised {memorised_fraction:.3f}; detection at t={t_detect:g}: {detection_at_t_detect}\n"
  "SAIL: {sail}"
)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit, sample, profile sharpness, detect, run SAIL; write ``results.json`` and the figure."""
  k_data, k_fit, k_noise, k_prof, k_ref = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
  D, P, S, num_steps = cfg.data, cfg.detect, cfg.sail, cfg.sample.num_steps
  gmm = data.sharp_broad_mixture(tuple(D.sharp_mean), D.sharp_std, 1.0, D.sharp_weight)
  train, comp, unique = data.duplicated_sample(k_data, gmm, D.num_train)
  with common.Timer() as t_fit:
    apply_fn, params, losses = common.fit_mlp_cfg(train, cfg, k_fit)
  field = functools.partial(apply_fn, params)
  sched = paths.linear_fm()
  score = paths.point_fn(field, sched, "velocity", "score")
  x0 = jax.random.normal(k_noise, (cfg.sample.num_samples, 2), train.dtype)
  flow_all = jax.jit(functools.partial(pipeline.euler_path, field, num_steps=num_steps))
  path = flow_all(x0)
  samples = path[-1]
  mem = np.asarray(memorisation.nn_ratio(samples, unique) <= P.mem_c)
  idx = np.rint(np.asarray(P.t_grid) * num_steps).astype(int)
  ts = jnp.asarray(idx / num_steps, train.dtype)
  profile = jax.jit(lambda xs, k: sharpness.sharpness_profile(score, xs, ts, k, k=1, num_iters=2))
  with common.Timer() as t_prof:
    prof = profile(path[idx], k_prof)
  scores = pipeline.profile_scores(prof)
  det = {
    name: {f"{float(t):g}": metrics.detection_report(s[i], mem) for i, t in enumerate(ts)}
    for name, s in scores.items()
  }
  i_det = int(np.argmin(np.abs(np.asarray(ts) - P.t_detect)))
  # SAIL arms (pipeline.sail_arms): g = sail_field of s(·, t_s) (ε-prediction −σ s by default) at
  # the state of cfg.sail.state, on the same plain noise; the rejection control at equal compute.
  n_s = max(1, int(round(S.t_s * num_steps)))
  t_s = n_s / num_steps
  tt = jnp.asarray(t_s, train.dtype)
  sigma = float(sched.sigma(tt))
  g_of = functools.lru_cache(None)(lambda d: sharpness.sail_field(lambda y: score(y, tt), sigma, d))
  state_fn, n_state = pipeline.state_fn_of(S, t_s, field, num_steps)
  arms = pipeline.sail_arms(
    S, g_of, x0, state_fn=state_fn, key=jax.random.fold_in(k_noise, 1), nfe_per_loss=2 + n_state
  )
  ref, _ = data.sample_mixture(k_ref, gmm, 2000)
  xs = {"plain": x0, **{k: a["x"] for k, a in arms.items()}}
  conv = {"plain": np.ones(x0.shape[0], bool), **{k: a["converged"] for k, a in arms.items()}}
  outs = {k: flow_all(x)[-1] for k, x in xs.items()}
  ratios = {k: np.asarray(memorisation.nn_ratio(v, unique)) for k, v in outs.items()}
  nn_ref = {k: np.asarray(neighbours.nearest_two(v, ref).d1) for k, v in outs.items()}
  sail_samples = outs.get("sail", samples)
  plain_arm = dict(
    x=x0, converged=conv["plain"], units=np.ones(x0.shape[0]), seconds=0.0, settings={}, stats={}
  )
  plain_arm["nfe_per_loss"] = 2 + n_state
  sail_summary = {
    "t_s": t_s,
    "state": S.get("state", "initial"),
    "network_evals_per_loss": 2 + n_state,
    "arms": {
      k: pipeline.arm_summary(
        plain_arm if k == "plain" else arms[k],
        ratios[k],
        P.mem_c,
        {
          "mean_nn_dist_to_fresh_data": float(np.mean(nn_ref[k][conv[k] if conv[k].any() else ...]))
        },
      )
      for k in xs
    },
  }
  np.savez(
    os.path.join(workdir, RAW),
    **{f"ratio/{k}": v for k, v in ratios.items()},
    **{f"converged/{k}": v for k, v in conv.items()},
    **{f"quality_nn/{k}": v for k, v in nn_ref.items()},
    **{f"sq_norm_over_D/{k}": np.sum(np.asarray(x) ** 2, 1) / 2 for k, x in xs.items()},
    **{f"units/{k}": (np.ones(x0.shape[0]) if k == "plain" else arms[k]["units"]) for k in xs},
  )
  lemma = lemma_gaps(score, sched, train, cfg.sample.num_samples, k_ref)
  median_lmin = lambda sel: np.median(np.asarray(prof.bottom[:, sel, 0]), 1).tolist()
  t_det = f"{float(ts[i_det]):g}"
  results = {
    "config": cfg.to_dict(),
    "train_seconds": t_fit.seconds,
    "profile_seconds": t_prof.seconds,
    "final_train_loss": float(np.mean(losses[-200:])),
    "num_train": int(train.shape[0]),
    "num_distinct_train": int(unique.shape[0]),
    "num_duplicates_of_sharp_point": int(np.sum(np.asarray(comp) == 0)),
    "memorised_fraction": float(mem.mean()),
    # The same criterion on fresh draws of the TRUE mixture: the chance floor of the label.
    "baseline_M_c_true_samples": float(
      np.mean(np.asarray(memorisation.nn_ratio(ref, unique)) <= P.mem_c)
    ),
    "t_grid": np.asarray(ts).tolist(),
    "t_detect": float(ts[i_det]),
    "detection_at_t_detect": {name: det[name][t_det] for name in det},
    "detection_over_t": det,
    "lemma_gap_trained_model": lemma,
    "median_lambda_min": {
      "memorised": median_lmin(mem) if mem.any() else None,
      "not_memorised": median_lmin(~mem),
    },
    "sail": sail_summary,
  }
  plot(
    os.path.join(workdir, FIGURE),
    np.asarray(ts),
    prof,
    mem,
    {n: s[i_det] for n, s in scores.items()},
    samples,
    sail_samples,
    arms["sail"]["losses"] if "sail" in arms else np.zeros((1, 1)),
    unique,
  )
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
