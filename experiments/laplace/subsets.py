r"""Which weights are Bayesian? Laplace cost and outcome over parameter subsets of the digits UNet.

For each subset of ``cfg.subsets.names`` (first conv layer, first + last, every convolution, every
parameter; :data:`experiments.laplace.configs.frontier.SUBSETS`) on the frontier experiment's
MAP: the Lanczos fit (its time, P, k, the evidence α), then for each sampler and each η of
``cfg.subsets.etas`` the same paired samples, their cost (geodesic steps, seconds, samples/s) and
their outcome (M_c, digits-FD, precision/recall) — the table that says what a larger subset costs
and whether it changes the comparison::

  python -m experiments.laplace.subsets --config=experiments/laplace/configs/subsets.py
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
from experiments.laplace.configs.frontier import SUBSETS
from memjax import laplace

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "subsets.py")
FIGURES = ("subsets.png",)


def run_subset(cfg, name, u, params, train, held, classifier, x0, keys, k_v, dtype):
  """Fit, cost and outcome of one subset."""
  fields = dict(cfg.posterior.to_dict(), select=SUBSETS[name])  # str or tuple of patterns
  if name in cfg.subsets.lanczos_k:
    fields.update(
      lanczos_k=int(cfg.subsets.lanczos_k[name]),
      lanczos_iters=int(cfg.subsets.lanczos_iters[name]),
    )
  pc = ml_collections.ConfigDict(fields)
  fit, ev, info = pipeline.fit_posterior(u, params, train, held, keys, pc, cfg.eval, dtype)
  row = {
    "subset": name,
    "num_params": info["num_subset_params"],
    "k": int(pc.lanczos_k),
    "lanczos_iters": int(pc.lanczos_iters),
    "lanczos_seconds": info["lanczos_seconds"],
    "alpha": info["alpha"],
    "min_hessian_eigenvalue": info["min_hessian_eigenvalue"],
    "top_ritz": float(info["ritz_values"][0]),
    "cells": [],
  }
  options = pipeline.sampler_options(pc)
  c = cfg.eval.headline_c

  def sample(eta, sampler):
    eta_a = jnp.asarray(eta, dtype)
    return jax.block_until_ready(
      laplace.posterior_samples(
        fit, eta_a, k_v, pc.num_posterior, samplers=(sampler,), mode=pc.mode, options=options
      )
    )

  for sampler in pc.samplers:
    # The first call compiles (outside the timing below); later η and subsets of the same shapes
    # reuse the module-level programs.
    with common.Timer() as t_compile:
      sample(cfg.subsets.etas[0], sampler)
    for eta in cfg.subsets.etas:
      with common.Timer() as t:
        _, out = sample(eta, sampler)
      smp = out[sampler]
      diag = pipeline.sampler_diagnostics(fit, smp)
      cell = {
        "sampler": sampler,
        "eta": float(eta),
        "seconds": t.seconds,
        "compile_seconds": t_compile.seconds,
        "samples_per_second": pc.num_posterior / max(t.seconds, 1e-9),
        "failed": diag["failed"],
        "num_steps": diag.get("num_steps"),
        "displacement": diag["displacement"],
      }
      ok = np.asarray(smp.success)
      if ok.any():
        numbers, _ = posterior_cells.evaluate_cell(
          ev, smp.theta, ok, x0, classifier, held, cfg.quality.k
        )
        cell.update(
          M_1_3=posterior_cells.m_of(numbers, c),
          digits_fd=numbers["digits_fd"],
          precision=numbers["precision"],
          recall=numbers["recall"],
        )
      row["cells"].append(cell)
  return row


def table(rows) -> str:
  """Markdown table: one line per (subset, sampler, η)."""
  head = (
    "| subset | P | k | Lanczos s | α | sampler | η | geodesic steps | samples/s | M_1/3 | "
    "digits-FD |\n|---|---|---|---|---|---|---|---|---|---|---|"
  )
  lines = [head]
  for r in rows:
    for c in r["cells"]:
      steps = f"{c['num_steps']['mean']:.0f}" if c["num_steps"] else "–"
      m = f"{c['M_1_3']:.3f}" if "M_1_3" in c else "failed"
      fd = f"{c['digits_fd']:.1f}" if "digits_fd" in c else "–"
      lines.append(
        f"| {r['subset']} | {r['num_params']} | {r['k']} | {r['lanczos_seconds']:.1f} | "
        f"{r['alpha']:.3g} | {c['sampler']} | {c['eta']:g} | {steps} | "
        f"{c['samples_per_second']:.3g} | {m} | {fd} |"
      )
  return "\n".join(lines)


def plot(path, rows):
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for i, sampler in enumerate(sorted({c["sampler"] for r in rows for c in r["cells"]})):
    for j, eta in enumerate(sorted({c["eta"] for r in rows for c in r["cells"]})):
      pts = [
        (r["num_params"], c)
        for r in rows
        for c in r["cells"]
        if c["sampler"] == sampler and c["eta"] == eta
      ]
      kw = dict(color=f"C{i}", marker="os^"[j % 3], label=f"{sampler} η={eta:g}")
      axes[0].plot([p for p, _ in pts], [c["samples_per_second"] for _, c in pts], "-", **kw)
      axes[1].plot([p for p, _ in pts], [c.get("M_1_3", np.nan) for _, c in pts], "-", **kw)
  axes[0].set(xscale="log", yscale="log", xlabel="Bayesian parameters P", title="samples / s")
  axes[1].set(xscale="log", xlabel="Bayesian parameters P", title="M_1/3")
  axes[0].legend(fontsize=7)
  plotting.save(fig, path, dpi=100)


def summarise(results: dict, workdir: str) -> str:
  return f"outputs: {workdir}\n" + results["table"]


def run(cfg, workdir: str) -> dict:
  """MAP (cached) → every subset's fit and paired samples → results.json, table, figure."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(cfg.x64):
    dtype = jnp.float64 if cfg.x64 else jnp.float32
    st = posterior_cells.setup(cfg, workdir, dtype)
    keys = pipeline.draw_keys(st.k_post, 0)
    k_v = jax.random.fold_in(st.k_sweep, 0)
    rows = []
    for name in tqdm.tqdm(cfg.subsets.names, desc="subsets", disable=not cfg.progress):
      rows.append(
        run_subset(
          cfg, name, st.u, st.params, st.train, st.held, st.classifier, st.x0, keys, k_v, dtype
        )
      )
    results = {"config": cfg.to_dict(), "checkpoint_dir": st.ckpt, "subsets": rows}
    results["table"] = table(rows)
    with open(os.path.join(workdir, "subsets.md"), "w") as f:
      f.write(results["table"] + "\n")
    plot(os.path.join(workdir, FIGURES[0]), rows)
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
