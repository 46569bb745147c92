r"""FLIPD of generated digits as a memorisation detector (AUROC, TPR@1%FPR against the ratio criterion).

A flow-matching model is trained on a small digits subset (memorises part of it);
each generated sample is labelled memorised when ``d1/d2 ≤ c`` and scored by
``−FLIPD`` (low model LID = memorised, per the manifold memorisation hypothesis)::

  python -m experiments.lid_detection --config=experiments/configs/lid_detection.py
  python -m experiments.lid_detection --config=experiments/configs/lid_detection.py:smoke --config.workdir=/tmp/x
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
from memjax import data, lid, memorisation, metrics, paths, sampling  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "lid_detection.py"))


def detection(scores, labels) -> dict:
  """AUROC and TPR@1%/3%FPR of ``scores`` (higher = memorised); see :func:`memjax.metrics.detection_report`."""
  return metrics.detection_report(scores, labels)


def plot(path, samples, flipd, mem, t0s, curves):
  fig = plt.figure(figsize=(15, 4.8))
  a = fig.add_subplot(1, 3, 1)
  bins = np.linspace(np.percentile(flipd, 1), np.percentile(flipd, 99), 40)
  for sel, name in ((~mem, "not memorised"), (mem, "memorised")):
    if sel.any():
      a.hist(flipd[sel], bins=bins, alpha=0.6, density=True, label=f"{name} ({sel.sum()})")
  a.set(xlabel="FLIPD", title="LIDθ of generated digits")
  a.legend(fontsize=7)
  a = fig.add_subplot(1, 3, 2)
  for sel, name, col in ((~mem, "not memorised", "C0"), (mem, "memorised", "C1")):
    if sel.any():
      a.plot(t0s, curves[:, sel].mean(1), "o-", color=col, label=name)
  a.set(xlabel="t0 (data at 1)", ylabel="mean FLIPD", title="FLIPD vs t0")
  a.legend(fontsize=7)
  order = np.argsort(flipd)
  pick = np.concatenate([order[:4], order[-4:]])
  for j, i in enumerate(pick):
    a = fig.add_subplot(2, 12, 9 + j + (12 if j >= 4 else 0) - (4 if j >= 4 else 0))
    a.imshow(samples[i].reshape(8, 8), cmap="gray", vmin=-1, vmax=1)
    a.set_title(f"{flipd[i]:.1f}{'*' if mem[i] else ''}", fontsize=7)
    a.axis("off")
  fig.suptitle("right: lowest-FLIPD (top) and highest-FLIPD (bottom) samples; * = memorised", fontsize=9)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  out = common.make_run_dir("lid_detection", workdir=cfg.workdir or None)
  k_sub, k_fit, k_noise, k_probe = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  images, labels = data.load_digits(flatten=True)
  train, _ = data.class_subset(k_sub, images, labels, cfg.num_train, tuple(cfg.classes) or None)
  train = jnp.asarray(train)
  M, L = cfg.model, cfg.lid
  with common.Timer() as t_fit:
    apply_fn, params, losses, _ = common.fit_fm(train, key=k_fit, hidden=M.hidden, time_dim=M.time_dim,
                                                steps=M.steps, batch_size=M.batch_size, lr=M.lr,
                                                ema_decay=M.ema_decay or None, progress=cfg.progress)
  x0 = jax.random.normal(k_noise, (cfg.num_samples, train.shape[1]), train.dtype)
  with common.Timer() as t_gen:
    gen = sampling.generate(apply_fn, params, x0, solver=cfg.solver, rtol=cfg.rtol, atol=cfg.atol)
    gen.x.block_until_ready()
  ok = np.asarray(gen.success)
  samples = gen.x[ok]
  mem = np.asarray(memorisation.nn_ratio(samples, train) <= cfg.mem_c)
  field, sched = functools.partial(apply_fn, params), paths.linear_fm()
  kw = dict(parameterisation="velocity", batch_size=L.batch_size)
  with common.Timer() as t_exact:
    flipd = np.asarray(lid.flipd(field, samples, L.t0, sched, **kw))
  with common.Timer() as t_hutch:
    flipd_h = np.asarray(lid.flipd(field, samples, L.t0, sched, key=k_probe, n_probes=L.n_probes, **kw))
  grid = jnp.asarray(L.t0_grid, samples.dtype)
  curves = np.asarray(lid.flipd_curve(field, samples, grid, sched, **kw))
  det_grid = {f"{t:g}": detection(-curves[i], mem) for i, t in enumerate(L.t0_grid)}
  results = {
      "config": cfg.to_dict(), "train_seconds": t_fit.seconds, "generate_seconds": t_gen.seconds,
      "final_train_loss": float(np.mean(losses[-200:])), "solver": sampling.summarise(gen),
      "num_samples": int(ok.sum()), "memorised_fraction": float(mem.mean()),
      "mean_flipd": {"memorised": float(np.mean(flipd[mem])) if mem.any() else float("nan"),
                     "not_memorised": float(np.mean(flipd[~mem])) if (~mem).any() else float("nan")},
      "detector_flipd_exact": detection(-flipd, mem),
      f"detector_flipd_hutchinson_{L.n_probes}_probes": detection(-flipd_h, mem),
      "detector_flipd_over_t0": det_grid,
      "flipd_seconds": {"exact": t_exact.seconds, f"hutchinson_{L.n_probes}": t_hutch.seconds},
  }
  fig = os.path.join(out, "lid_detection.png")
  plot(fig, np.asarray(samples), flipd, mem, np.asarray(L.t0_grid), curves)
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"figure: {fig}\nresults: {js}")
  print(f"memorised {mem.mean():.3f}; mean FLIPD {results['mean_flipd']}; "
        f"exact {results['detector_flipd_exact']}; over t0 {det_grid}")


if __name__ == "__main__":
  app.run(main)
