r"""Riemannian vs Euclidean Laplace on a 2D Gaussian mixture with few training points (memorising MAP).

Reports, per η and for both posteriors (paired tangent velocities): M_c over the c
grid, held-out FM loss, and a quality proxy (mean log-likelihood of generated
samples under the true mixture, and mean distance to the nearest fresh test point)::

  python -m experiments.toy_2d --config=experiments/configs/toy_2d.py
"""
from __future__ import annotations

import os

from absl import app
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from experiments import common, laplace_toy  # noqa: E402
from memjax import data, memorisation  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs", "toy_2d.py"))


def make_extra_metrics(gmm, test):
  def extra(post, thetas, ok, xs):
    ll = np.asarray(data.mixture_log_prob(gmm, jnp.asarray(xs)))
    d_test = np.asarray(memorisation.nearest_two(jnp.asarray(xs), test).d1)
    return {"true_log_likelihood_mean": float(ll.mean()), "nn_distance_to_test_mean": float(d_test.mean())}
  return extra


def plot(path, rows, map_metrics, keep, gen_map, train, truth):
  etas = [r["eta"] for r in rows if "euclidean" in r]
  fig = plt.figure(figsize=(16, 8))
  panels = (("M_1/3", lambda m: m["memorisation"]["M_c"][3]),
            ("held-out FM loss", lambda m: m["heldout_fm_loss"]["mean"]),
            ("mean true log-likelihood", lambda m: m["true_log_likelihood_mean"]))
  for i, (title, f) in enumerate(panels):
    a = fig.add_subplot(2, 4, i + 1)
    a.plot(etas, [f(r["euclidean"]) for r in rows if "euclidean" in r], "o-", label="Euclidean LA")
    a.plot(etas, [f(r["riemannian"]) for r in rows if "riemannian" in r], "s-", label="Riemannian LA")
    a.axhline(f(map_metrics), color="k", ls=":", label="MAP")
    a.set(xscale="log", xlabel="η", title=title)
    a.set_xticks(etas, [f"{e:g}" for e in etas], minor=False)
    a.minorticks_off()
  a.legend(fontsize=8)
  a = fig.add_subplot(2, 4, 4)
  cs = np.asarray(map_metrics["memorisation"]["cs"])
  a.plot(cs, map_metrics["memorisation"]["M_c"], "k:", label="MAP")
  if keep:
    eta = max(keep)
    row = next(r for r in rows if r["eta"] == eta)
    a.plot(cs, row["euclidean"]["memorisation"]["M_c"], "o-", label=f"Euclidean η={eta}")
    a.plot(cs, row["riemannian"]["memorisation"]["M_c"], "s-", label=f"Riemannian η={eta}")
  a.set(xlabel="c", ylabel="M_c", title="M_c over the c grid")
  a.legend(fontsize=7)
  shown = [("MAP", gen_map)] + [(f"{k} η={e}", keep[e][g]) for e in sorted(keep)[-1:]
                                for k, g in (("Euclidean", "gen_e"), ("Riemannian", "gen_r"))]
  for i, (title, g) in enumerate(shown):
    a = fig.add_subplot(2, 4, 5 + i)
    a.scatter(*truth.T, s=2, c="0.85")
    a.scatter(*g.reshape(-1, 2).T, s=3, alpha=0.5)
    a.scatter(*train.T, s=40, marker="x", c="r")
    a.set(title=title, aspect="equal", xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  cfg = _CONFIG.value
  out = common.make_run_dir("toy_2d", workdir=cfg.workdir or None)
  k_data, k_test, k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  gmm = data.ring_mixture(cfg.num_modes, cfg.radius, cfg.std)
  train, _ = data.sample_mixture(k_data, gmm, cfg.num_train)
  test, _ = data.sample_mixture(k_test, gmm, cfg.num_test)
  gmm64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), gmm)
  post = laplace_toy.build_posterior(cfg, train, k_post)
  rows, map_metrics, keep, gen_map = laplace_toy.run_eta_sweep(
      post, cfg, k_sweep, make_extra_metrics(gmm64, jnp.asarray(test, jnp.float64)))
  results = {"config": cfg.to_dict(), "map": {**post["info"], **map_metrics}, "sweep": rows,
             "claims": {"M_1/3": laplace_toy.comparison(rows, ("memorisation", "M_c", 3)),
                        "heldout_fm_loss": laplace_toy.comparison(rows, ("heldout_fm_loss", "mean")),
                        "neg_true_log_likelihood": laplace_toy.comparison(
                            [_negate_ll(r) for r in rows], ("neg_ll",))}}
  fig = os.path.join(out, "toy_2d.png")
  plot(fig, rows, map_metrics, keep, gen_map, np.asarray(train), np.asarray(test))
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"figure: {fig}\nresults: {js}")
  print(f"MAP M_1/3 = {map_metrics['memorisation']['M_c'][3]:.3f}")
  for name, claim in results["claims"].items():
    vals = ", ".join(f"η={c['eta']}: E {c['euclidean']:.4g} / R {c['riemannian']:.4g}" for c in claim["per_eta"])
    print(f"{name}: Riemannian lower at all η = {claim['riemannian_lower_at_all_eta']} ({vals})")


def _negate_ll(row):
  out = dict(row)
  for k in ("euclidean", "riemannian"):
    if k in row:
      out[k] = {"neg_ll": -row[k]["true_log_likelihood_mean"]}
  return out


if __name__ == "__main__":
  app.run(main)
