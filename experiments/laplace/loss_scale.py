r"""The loss scale as an axis: how far Riemannian Laplace moves and what it memorises, against s.

The Laplace loss is ``L(θ) = s Σ_b ℓ_b + (α/2)||θ||²`` on ``B`` frozen triples. The papers' flow
matching loss ``L_FM = E_{x1, x0, t} ||u_θ(x_t, t) − (x1 − x0)||²`` is an EXPECTATION, so the
triple estimate of it is the MEAN, ``s = 1/B`` (``posterior.loss_scale = "mean"``); issue 16 ran
the SUM, ``s = 1``. The metric ``G = I + ∇L∇Lᵀ`` of the Riemannian sampler is not invariant to
``s``: after the tilt ``∇L̃(θ*) = 0``, the geodesic's speed is constant and equal to ``||v||``, so
``|L̃(θ_R) − L̃(θ*)| ≤ ||v||`` and ``||θ_R − θ*|| ≤ ||v||`` — a larger ``s`` caps the loss a
geodesic can climb relative to the curvature it sees.

For each scale of ``cfg.loss_scale.scales`` ("sum", "mean" or a number) on the frontier
experiment's MAP: the fit (α by ``posterior.alpha_rule``, which rescales with ``s``), then for
each η of ``cfg.loss_scale.etas`` paired Euclidean and Riemannian samples (same ``v``) and their
``||θ − θ*||``, ``ΔL̃ = L̃(θ) − L̃(θ*)``, ``||v||`` (the bound) and ``M_c`` (c =
``eval.headline_c``) with digits-FD::

  python -m experiments.laplace.loss_scale --config=experiments/laplace/configs/loss_scale.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import tqdm

from experiments import common, plotting
from experiments.laplace import pipeline, posterior_cells
from memjax import laplace

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "loss_scale.py")
FIGURES = ("loss_scale.png",)


def _mean(x, ok):
  x = np.asarray(x)[np.asarray(ok)]
  return float(np.mean(x)) if x.size else None


def run_scale(cfg, scale, st, keys, k_v, dtype):
  """Fit at loss scale ``scale`` and the paired samples' reach and memorisation per η."""
  fields = cfg.posterior.to_dict()
  fields["loss_scale"] = scale
  pc = ml_collections.ConfigDict(fields)
  fit, ev, info = pipeline.fit_posterior(
    st.u, st.params, st.train, st.held, keys, pc, cfg.eval, dtype
  )
  options = pipeline.sampler_options(pc)
  c = cfg.eval.headline_c
  loss_map = float(ev.batch_loss(fit.theta_map[None])[0])
  row = {
    "scale": scale,
    "s": info["loss_scale"],
    "alpha": info["alpha"],
    "top_ritz": float(info["ritz_values"][0]),
    "loss_name": info["loss_name"],
    "grad_norm": info["grad_norm"],
    "cells": [],
  }
  for eta in cfg.loss_scale.etas:
    v, out = jax.block_until_ready(
      laplace.posterior_samples(
        fit,
        jnp.asarray(eta, dtype),
        k_v,
        pc.num_posterior,
        samplers=tuple(pc.samplers),
        mode=pc.mode,
        options=options,
      )
    )
    speed = np.asarray(jnp.linalg.norm(v, axis=-1))
    cell = {"eta": float(eta), "v_norm": float(np.mean(speed))}
    for name in pc.samplers:
      smp = out[name]
      ok = np.asarray(smp.success)
      disp = np.asarray(jnp.linalg.norm(smp.theta - fit.theta_map[None], axis=-1))
      d_loss = np.asarray(ev.batch_loss(smp.theta)) - loss_map
      numbers = {
        "failed": int((~ok).sum()),
        "displacement": _mean(disp, ok),
        "delta_loss": _mean(d_loss, ok),
        # |ΔL̃| ≤ ||v|| and ||θ − θ*|| ≤ ||v|| for a geodesic of G from a stationary θ*.
        "delta_loss_over_v": _mean(np.abs(d_loss) / np.maximum(speed, 1e-30), ok),
        "displacement_over_v": _mean(disp / np.maximum(speed, 1e-30), ok),
      }
      if ok.any():
        q, _ = posterior_cells.evaluate_cell(
          ev, smp.theta, ok, st.x0, st.classifier, st.held, cfg.quality.k
        )
        numbers.update(M_c=posterior_cells.m_of(q, c), digits_fd=q["digits_fd"])
      cell[name] = numbers
    row["cells"].append(cell)
  return row


def plot(path, rows, names, c):
  etas = sorted({cl["eta"] for r in rows for cl in r["cells"]})
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for i, name in enumerate(names):
    for j, eta in enumerate(etas):
      s = [r["s"] for r in rows]
      cells = [next(cl for cl in r["cells"] if cl["eta"] == eta) for r in rows]

      def get(key, cells=cells, name=name):
        vals = [cl[name].get(key) for cl in cells]
        return [np.nan if x is None else x for x in vals]

      kw = dict(color=f"C{i}", marker="os^D"[j % 4], label=f"{name} η={eta:g}")
      axes[0].plot(s, get("displacement"), "-", **kw)
      axes[1].plot(s, np.abs(get("delta_loss")), "-", **kw)
      axes[2].plot(s, get("M_c"), "-", **kw)
      if i == 0:
        axes[1].plot(s, [cl["v_norm"] for cl in cells], ":", color="k", lw=1)
  axes[0].set(xscale="log", yscale="log", xlabel="loss scale s", title="||θ − θ*||")
  axes[1].set(xscale="log", yscale="log", xlabel="loss scale s", title="|ΔL̃| (dotted: ||v||)")
  axes[2].set(xscale="log", xlabel="loss scale s", title=pipeline.m_label(c))
  axes[0].legend(fontsize=7)
  plotting.save(fig, path, dpi=100)


def summarise(results: dict, workdir: str) -> str:
  lines = [f"outputs: {workdir}"]
  for r in results["scales"]:
    for cl in r["cells"]:
      parts = [
        f"s={r['s']:.4g} ({r['scale']}) α={r['alpha']:.3g} η={cl['eta']:g} ||v||={cl['v_norm']:.3g}"
      ]
      for name in results["config"]["posterior"]["samplers"]:
        n = cl[name]
        m = f"{n['M_c']:.3f}" if "M_c" in n else "–"
        fmt = lambda x: "–" if x is None else f"{x:.3g}"
        parts.append(f"{name}: |θ−θ*| {fmt(n['displacement'])}, ΔL̃ {fmt(n['delta_loss'])}, M {m}")
      lines.append("; ".join(parts))
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """MAP (cached) → for every loss scale: fit, paired samples per η → results.json, figure."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(cfg.x64):
    dtype = jnp.float64 if cfg.x64 else jnp.float32
    st = posterior_cells.setup(cfg, workdir, dtype)
    keys = pipeline.draw_keys(st.k_post, 0)
    k_v = jax.random.fold_in(st.k_sweep, 0)
    rows = [
      run_scale(cfg, scale, st, keys, k_v, dtype)
      for scale in tqdm.tqdm(cfg.loss_scale.scales, desc="loss scales", disable=not cfg.progress)
    ]
    results = {"config": cfg.to_dict(), "checkpoint_dir": st.ckpt, "scales": rows}
    plot(os.path.join(workdir, FIGURES[0]), rows, cfg.posterior.samplers, cfg.eval.headline_c)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
