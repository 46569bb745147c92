r"""Riemannian vs Euclidean Laplace on a 2D Gaussian mixture with few training points.

The MAP memorises. Reports, per η and for every sampler (paired tangent velocities): M_c over
the c grid, held-out FM loss, and a quality proxy (mean log-likelihood of generated samples
under the true mixture, and mean distance to the nearest fresh test point)::

  python -m experiments.laplace.toy_2d --config=experiments/laplace/configs/toy_2d.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.laplace import pipeline
from memjax import data, neighbours

# The default ``--config`` (see :func:`experiments.common.main`).
CONFIG = os.path.join(os.path.dirname(__file__), "configs", "toy_2d.py")

FIGURE = "toy_2d.png"


def make_extra_metrics(gmm, test):
  """Mean true log-likelihood and mean nearest-test-point distance of the pooled samples."""

  def extra(thetas, ok, xs):
    del thetas, ok
    ll = np.asarray(data.mixture_log_prob(gmm, jnp.asarray(xs)))
    d_test = np.asarray(neighbours.nearest_two(jnp.asarray(xs), test).d1)
    return {
      "true_log_likelihood_mean": float(ll.mean()),
      "nn_distance_to_test_mean": float(d_test.mean()),
    }

  return extra


def plot(path, sweep, names, cs, train, truth, c):
  """Metrics against η, M_c over the c grid, and the generated samples at the largest η."""
  rows, map_metrics, keep = sweep.rows, sweep.map_metrics, sweep.keep
  fig = plt.figure(figsize=(16, 8))
  panels = (
    (pipeline.m_label(c), lambda m: pipeline.m_c(m, c)),
    ("held-out FM loss", lambda m: m["heldout_fm_loss"]["mean"]),
    ("mean true log-likelihood", lambda m: m["true_log_likelihood_mean"]),
  )
  for i, (title, f) in enumerate(panels):
    a = fig.add_subplot(2, 4, i + 1)
    pipeline.eta_panel(a, rows, map_metrics, names, title, f)
  a.legend(fontsize=8)
  a = fig.add_subplot(2, 4, 4)
  curve = lambda m: [pipeline.m_c(m, c) for c in cs]
  a.plot(cs, curve(map_metrics), "k:", label="MAP")
  shown = [("MAP", sweep.gen_map)]
  if keep:
    eta = max(keep)
    row = next(r for r in rows if r["eta"] == eta)
    for name, marker in zip(names, pipeline.MARKERS):
      a.plot(cs, curve(row[name]), marker + "-", label=f"{name.capitalize()} η={eta}")
      shown.append((f"{name.capitalize()} η={eta}", keep[eta][name]["gen"]))
  a.set(xlabel="c", ylabel="M_c", title="M_c over the c grid")
  a.legend(fontsize=7)
  for i, (title, g) in enumerate(shown[:4]):
    a = fig.add_subplot(2, 4, 5 + i)
    a.scatter(*truth.T, s=2, c="0.85")
    a.scatter(*g.reshape(-1, 2).T, s=3, alpha=0.5)
    a.scatter(*train.T, s=40, marker="x", c="r")
    a.set(title=title, aspect="equal", xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
  plotting.save(fig, path, dpi=100)


def _negate_ll(row, names):
  """A row whose sampler metrics are ``{"neg_ll": −mean true log-likelihood}``."""
  out = dict(row)
  for name in names:
    if name in row:
      out[name] = {"neg_ll": -row[name]["true_log_likelihood_mean"]}
  return out


# What each metric rewards (results.json ``metric_notes``).
METRIC_NOTES = {
  "heldout_fm_loss": "FM loss on fresh triples whose data points are the held-out TEST samples "
  "of the true mixture (not the 12 training points): rewards generalisation to the mixture.",
  "memorisation": "M_c = fraction of generated samples with d1^2 <= c d2^2 (the papers' squared "
  "criterion, keyed by c). M_c_true_samples is M_c of the held-out test samples of the TRUE "
  "mixture against the training points (what a perfect sampler scores by chance), M_c_excess "
  "= M_c - that baseline: only the excess measures copying.",
  "true_log_likelihood_mean": "mean log p_true of the generated samples: rewards samples in "
  "high-density regions, including copies of training points (it does not penalise "
  "memorisation or mode collapse).",
  "nn_distance_to_test_mean": "mean distance to the nearest test point: rewards samples near "
  "the data, copies included.",
  "tradeoff": "(M_MAP - M) / (held-out FM loss - its MAP value): memorisation removed per unit "
  "of held-out loss.",
}


def claim_paths(c: float) -> dict:
  """The claims' metric paths (M at the headline c, squared criterion)."""
  return {
    pipeline.m_label(c): pipeline.m_path(c),
    "heldout_fm_loss": ("heldout_fm_loss", "mean"),
  }


def make_claims(rows, cfg) -> dict:
  """The claims of :func:`claim_paths` plus the negated true log-likelihood (lower = better)."""
  names = tuple(cfg.posterior.samplers)
  compare = cfg.eval.compare
  out = pipeline.claims(rows, claim_paths(cfg.eval.headline_c), compare)
  out["neg_true_log_likelihood"] = pipeline.comparison(
    [_negate_ll(r, names) for r in rows], ("neg_ll",), *compare
  )
  return out


def summarise(results: dict, workdir: str) -> str:
  """The MAP's M_1/3 beside the true-sample baseline, ||∇L||, and one line per claim."""
  del workdir
  m, c = results["map"], pipeline.headline_c(results)
  base = pipeline.m_c(m["baseline_true_samples"], c)
  lines = [f"MAP {pipeline.m_label(c)} = {pipeline.m_c(m, c):.3f} (true samples: {base:.3f})"]
  lines += pipeline.draw_and_claim_lines(results)
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """MAP → Laplace fit(s) → η sweep on a ring mixture; writes results.json and a figure."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(True):
    k_data, k_test, k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
    gmm = data.ring_mixture(cfg.data.num_modes, cfg.data.radius, cfg.data.std)
    train, _ = data.sample_mixture(k_data, gmm, cfg.data.num_train)
    test, _ = data.sample_mixture(k_test, gmm, cfg.data.num_test)
    gmm64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), gmm)
    test64 = jnp.asarray(test, jnp.float64)
    k_map, *keys = jax.random.split(k_post, 4)
    apply_fn, params, map_info = pipeline.train_mlp_map(cfg, train, k_map)
    extra = make_extra_metrics(gmm64, test64)
    draws, agreement = pipeline.run_draws(
      cfg, apply_fn, params, train, test64, tuple(keys), k_sweep, lambda f: extra, jnp.float64
    )
    sweep = draws[0].sweep
    names = tuple(cfg.posterior.samplers)
    claims_fn = lambda r: make_claims(r, cfg)
    results = pipeline.results_block(cfg, METRIC_NOTES, map_info, draws, agreement, claims_fn)
    plot(
      os.path.join(workdir, FIGURE),
      sweep,
      names,
      list(cfg.eval.cs),
      np.asarray(train),
      np.asarray(test),
      cfg.eval.headline_c,
    )
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURE)
