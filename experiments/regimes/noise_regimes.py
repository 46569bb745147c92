r"""Noise regimes: where along the schedule memorisation is set, and a targeted intervention.

For 2D ring-mixture subsets and digits subsets (d = 64) of several sizes n:

1. curves vs σ (VE view y = x + σz): posterior concentration W_σ (train), shell coverage C_σ
   (held-out), linearity gap ρ(σ), regime boundaries and danger zone;
2. a flow-matching MLP is trained on each subset; its velocity is read as a VE denoiser
   (t = 1/(1+σ), x̂ = x_t + (1−t)u) and sampled with a deterministic Heun probability-flow
   sampler. Its per-σ distance to the empirical optimum D* is the memorisation-by-noise-level
   profile;
3. window swaps: D* replaces the model only for σ inside a sliding window → M_1/3 per window
   ("where memorisation is induced");
4. intervention: blend the model toward D_lin (λ) inside the medium-noise window only vs at
   every σ; M_c and quality (energy distance / NN distance to held-out).

  python -m experiments.regimes.noise_regimes --config=experiments/regimes/configs/noise_regimes.py
  python -m experiments.regimes.noise_regimes \
      --config=experiments/regimes/configs/noise_regimes.py:smoke --config.workdir=/tmp/x
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from experiments import common, plotting
from memjax import data, denoisers, memorisation, metrics, neighbours, regimes, sampling

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "noise_regimes.py")

DATASETS = ("toy2d", "digits")
THIRD = memorisation.c_label(1 / 3)  # the key of M_1/3 in every "M_c" dict


def m_third(row: dict) -> float:
  """``M_1/3`` of an :func:`evaluate` row."""
  return row["M_c"][THIRD]


def load_sets(name, n, data_cfg, key):
  """Training subset ``(n, d)`` and held-out set from the same distribution (float32)."""
  k_tr, k_ho = jax.random.split(key)
  if name == "toy2d":
    gmm = data.ring_mixture(data_cfg.num_modes, data_cfg.radius, data_cfg.std)
    return (
      data.sample_mixture(k_tr, gmm, n)[0],
      data.sample_mixture(k_ho, gmm, data_cfg.num_held_out)[0],
    )
  x, _ = data.load_digits(flatten=True)
  perm = np.asarray(jax.random.permutation(k_tr, len(x)))
  return jnp.asarray(x[np.sort(perm[:n])]), jnp.asarray(x[np.sort(perm[n:])])


def regime_curves(key, train, held, cfg, group):
  """W_σ, entropy, N_eff, C_σ (Monte Carlo and NN rule), ρ(σ) and the boundaries."""
  C = cfg.curves
  k1, k2, k3 = jax.random.split(key, 3)
  sig = np.geomspace(*group.curves.sigma_range, C.num_sigmas).astype(np.float32)
  conc = regimes.concentration(k1, train, sig, num_noise=C.num_noise)
  cov = regimes.shell_coverage(k2, train, held, sig, c=C.shell_c, num_noise=C.num_noise)
  nn_ho = neighbours.nearest_two(held, train).d1
  rule = regimes.coverage_rule(nn_ho, sig, train.shape[1], C.shell_c)
  rho = regimes.linearity_gap(k3, train, sig, num_noise=C.num_noise)
  bounds = regimes.regime_boundaries(sig, cov.coverage, conc.max_weight, C.threshold)
  bounds.update(rough=regimes.rough_boundaries(train, held, C.shell_c))
  return {
    "sigmas": sig,
    "W": conc.max_weight,
    "entropy": conc.entropy,
    "n_eff": conc.n_eff,
    "C": cov.coverage,
    "shell_multiplicity": cov.multiplicity,
    "C_rule": rule,
    "rho": rho,
    "boundaries": bounds,
  }


def medium_window(bounds, grid_step):
  """The danger zone if non-empty, else the gap between σ_large and σ_small (the medium regime).

  Edges are widened by one curve-grid step ``grid_step = σ_{k+1}/σ_k`` on each side, so that a
  zone found at a single grid σ still spans several sampler levels.
  """
  kind = "danger_zone"
  lo, hi = bounds["danger_lo"], bounds["danger_hi"]
  if not np.isfinite(lo):
    kind = "between_boundaries"
    lo, hi = sorted((bounds["sigma_small"], bounds["sigma_large"]))
  if not (np.isfinite(lo) and np.isfinite(hi)):
    kind = "rough_boundaries"
    lo, hi = sorted((bounds["rough"]["sigma_cov_shell"], bounds["rough"]["sigma_conc"]))
  return (float(lo / grid_step), float(hi * grid_step)), kind


def make_samplers(apply_fn, sigmas):
  """Jitted ``sample(params, train, z, lo, hi, lam)`` with D* or D_lin as the window denoiser."""
  grid = jnp.asarray(sigmas)

  def build(use_empirical):
    @jax.jit
    def sample(params, train, z, lo, hi, lam):
      model = denoisers.fm_denoiser(apply_fn, params)
      if use_empirical:
        other = lambda y, s: (
          denoisers.posterior(train, y, s, query_chunk=512, train_chunk=1024).denoiser
        )
      else:
        lg = denoisers.fit_linear_gaussian(train)
        other = lambda y, s: denoisers.linear_denoiser(lg, y, s)
      return sampling.sample_pf(denoisers.windowed(model, other, lo, hi, lam), z, grid)

    return sample

  return build(True), build(False)


def evaluate(x, train, held, cs) -> dict:
  """M_c (keyed by :func:`memjax.memorisation.c_label`) against the training set and quality
  proxies against held-out data."""
  r = memorisation.nn_ratio(x, train)
  return {
    "M_c": memorisation.summary(r, cs)["M_c"],
    "energy_distance": float(metrics.energy_distance(x, held)),
    "nn_dist_held_out": float(np.mean(np.asarray(neighbours.nearest_two(x, held).d1))),
  }


def run_windows(sample_emp, sample_lin, params, train, z, held, cfg, group):
  """Slide a window over [σ_min, σ_max] (log-even) and swap the model's denoiser inside it.

  ``windows``: D* in the window (where memorisation can be *induced*); ``lin_windows``: D_lin in
  the window (where the model's own memorisation is *set*: removing it there lowers M_c the
  most). Adjacent windows share one grid level.
  """
  S, cs = group.sample, cfg.eval.cs
  wins = regimes.log_windows(S.sigma_min, S.sigma_max, cfg.intervene.num_windows)
  rows, lin_rows = [], []
  for lo, hi in wins:
    span = dict(window=[float(lo), float(hi)])
    for sample, out in ((sample_emp, rows), (sample_lin, lin_rows)):
      x = sample(params, train, z, lo * 0.999, hi * 1.001, 1.0).x
      out.append(dict(evaluate(x, train, held, cs), **span))
  full = sample_emp(params, train, z, 0.0, 2 * S.sigma_max, 1.0)
  return {
    "windows": rows,
    "lin_windows": lin_rows,
    "empirical_everywhere": evaluate(full.x, train, held, cs),
  }


def wide_window(curves, threshold, grid_step):
  """Wider medium regime: coverage onset (``σ_small``) to the last σ with ``W_σ ≥ threshold``."""
  s, w = np.asarray(curves["sigmas"], np.float64), np.asarray(curves["W"])
  lo = curves["boundaries"]["sigma_small"]
  hi = float(s[np.flatnonzero(w >= threshold)[-1]]) if np.any(w >= threshold) else float(s[0])
  lo = lo if np.isfinite(lo) else float(s[0])
  return float(min(lo, hi) / grid_step), float(max(lo, hi) * grid_step)


def _ratio(d_m, d_q):
  return d_m / d_q if d_q > 1e-12 else (float("inf") if d_m > 0 else float("nan"))


def run_interventions(sample_lin, params, train, z, held, windows, cfg, group):
  """Blend toward D_lin with weight λ inside each targeted window or at every σ (global)."""
  cs = cfg.eval.cs
  base = sample_lin(params, train, z, 1.0, 0.0, 0.0)  # empty window: untouched model
  out = {
    "untouched": dict(
      evaluate(base.x, train, held, cs),
      max_local_error=float(jnp.max(base.local_error)),
      num_evals=base.num_evals,
    )
  }
  samples = {"untouched": np.asarray(base.x)}
  spans = tuple(windows.items()) + (("global", (0.0, 2 * group.sample.sigma_max)),)
  for lam in cfg.intervene.lams:
    for name, (lo, hi) in spans:
      res = sample_lin(params, train, z, lo, hi, lam)
      out[f"{name}_lam{lam:g}"] = dict(evaluate(res.x, train, held, cs), lam=lam, window=[lo, hi])
      samples[f"{name}_lam{lam:g}"] = np.asarray(res.x)
  ref = out["untouched"]
  for row in out.values():  # M_c reduction per unit of quality lost, for both proxies
    d_m = m_third(ref) - m_third(row)
    d_e = row["energy_distance"] - ref["energy_distance"]
    d_nn = row["nn_dist_held_out"] - ref["nn_dist_held_out"]
    row.update(
      delta_M=d_m,
      delta_energy=d_e,
      delta_nn=d_nn,
      M_drop_per_quality_loss=_ratio(d_m, d_e),
      M_drop_per_nn_loss=_ratio(d_m, d_nn),
    )
  return out, samples


def run_one(name, n, cfg, group, key):
  """Curves, fit, profile, window swaps and interventions for one subset of size ``n``."""
  k_data, k_curve, k_fit, k_z, k_prof = jax.random.split(key, 5)
  train, held = load_sets(name, n, group.data, k_data)
  curves = regime_curves(k_curve, train, held, cfg, group)
  with common.Timer() as t_fit:
    apply_fn, params, losses = common.fit_mlp(
      train, group.model, group.train, k_fit, progress=cfg.progress
    )
  prof = regimes.denoiser_profile(
    k_prof, jax.jit(denoisers.fm_denoiser(apply_fn, params)), train, curves["sigmas"]
  )
  S = group.sample
  sample_emp, sample_lin = make_samplers(
    apply_fn, regimes.sigma_grid(S.sigma_min, S.sigma_max, S.num_steps)
  )
  z = jax.random.normal(k_z, (S.num_samples, train.shape[1]), train.dtype)
  sig = np.asarray(curves["sigmas"], np.float64)
  step = sig[1] / sig[0]
  window, kind = medium_window(curves["boundaries"], step)
  windows = {
    "targeted": window,
    "targeted_wide": wide_window(curves, cfg.curves.threshold_wide, step),
  }
  with common.Timer() as t_samp:
    wins = run_windows(sample_emp, sample_lin, params, train, z, held, cfg, group)
    inter, samples = run_interventions(sample_lin, params, train, z, held, windows, cfg, group)
  ref = evaluate(held[: S.num_samples], train, held[S.num_samples :], cfg.eval.cs)
  res = {
    "n": n,
    "d": int(train.shape[1]),
    "curves": curves,
    "fit_seconds": t_fit.seconds,
    "sample_seconds": t_samp.seconds,
    "final_train_loss": float(np.mean(losses[-100:])),
    "profile": {"rel_dist": prof.rel_dist, "alignment": prof.alignment},
    "window_swap": wins,
    "held_out_reference": ref,
    "intervention_window": {
      "sigma": list(window),
      "kind": kind,
      "wide": list(windows["targeted_wide"]),
    },
    "interventions": inter,
  }
  logging.info(
    "%s n=%d: bounds %s; untouched M=%.3f",
    name,
    n,
    {k: v for k, v in curves["boundaries"].items() if k != "danger_mask"},
    m_third(inter["untouched"]),
  )
  return res, (np.asarray(train), np.asarray(held), samples)


def _curve_panels(ax, results):
  for k, res in enumerate(results):
    col, cv, b = f"C{k}", res["curves"], res["curves"]["boundaries"]
    s = np.asarray(cv["sigmas"])
    ax[0, 0].semilogx(s, cv["W"], color=col, label=f"n={res['n']} W_σ")
    ax[0, 0].semilogx(s, cv["C"], color=col, ls="--", label=f"n={res['n']} C_σ")
    if np.isfinite(b["danger_lo"]):
      ax[0, 0].plot([b["danger_lo"], b["danger_hi"]], [-0.04 - 0.04 * k] * 2, color=col, lw=5)
    for key, mk in (("sigma_cov_shell", "v"), ("sigma_conc", "^")):
      ax[0, 0].plot(b["rough"][key], 1.06, marker=mk, color=col, ls="")
    ax[0, 1].semilogx(
      s, res["profile"]["alignment"], color=col, label=f"n={res['n']} model alignment to D*"
    )
    ax[0, 1].semilogx(s, cv["rho"], color=col, ls=":", label=f"n={res['n']} ρ(σ)")
    ax[1, 2].loglog(s, cv["n_eff"], color=col, label=f"n={res['n']} N_eff")
    ax[1, 2].semilogx(s, np.asarray(cv["C_rule"]) * res["n"], color=col, ls="--", alpha=0.5)
    wins = res["window_swap"]["windows"]
    centres = [np.sqrt(w["window"][0] * w["window"][1]) for w in wins]
    ax[0, 2].semilogx(
      centres, [m_third(w) for w in wins], "o-", color=col, label=f"n={res['n']} D* in window"
    )
    ax[0, 2].semilogx(
      centres,
      [m_third(w) for w in res["window_swap"]["lin_windows"]],
      "s--",
      color=col,
      label=f"n={res['n']} D_lin in window",
    )
    ax[0, 2].axhline(m_third(res["interventions"]["untouched"]), color=col, ls=":")
  ax[0, 0].axhline(0.8, color="k", lw=0.5)
  ax[0, 0].set(
    title="W_σ (solid), C_σ (dashed); bars: danger zone; ▼σ_cov ▲σ_conc",
    xlabel="σ",
    ylim=(-0.2, 1.1),
  )
  ax[0, 1].set(
    title="profile: model alignment to D* (1=D*, 0=D_lin); ρ(σ) dotted",
    xlabel="σ",
    ylim=(-0.3, 1.5),
  )
  ax[0, 2].set(
    title="M_1/3, D* (o) or D_lin (s) only in a σ window (dotted: untouched)",
    xlabel="window centre σ",
    ylabel="M_1/3",
  )
  ax[1, 2].set(title="N_eff (solid); n·C_rule (dashed)", xlabel="σ")
  for a in (ax[0, 0], ax[0, 1], ax[0, 2], ax[1, 2]):
    a.legend(fontsize=6)


def _tradeoff_panel(a, results):
  for k, res in enumerate(results):
    inter, col = res["interventions"], f"C{k}"
    base = inter["untouched"]
    a.plot(base["energy_distance"], m_third(base), "k*", ms=9)
    for name, mk in (("targeted_lam", "o-"), ("targeted_wide", "^-."), ("global", "s--")):
      rows = [base] + [v for kk, v in inter.items() if kk.startswith(name)]
      a.plot(
        [r["energy_distance"] for r in rows],
        [m_third(r) for r in rows],
        mk,
        color=col,
        label=f"n={res['n']} {name}",
      )
  a.set(
    title="intervention (blend→D_lin, λ): M_1/3 vs energy distance to held-out",
    xlabel="energy distance",
    ylabel="M_1/3",
  )
  a.legend(fontsize=6)


def _sample_panel(a, name, extra):
  train, held, samples = extra
  keys = ["untouched"] + [k for k in samples if k.endswith("lam1") and "wide" not in k]
  if name == "toy2d":
    a.scatter(*held[:1000].T, s=2, c="0.85")
    for k, key in enumerate(keys):
      a.scatter(*samples[key].T, s=3, color=f"C{k + 3}", label=key)
    a.scatter(*train.T, s=30, marker="x", c="k", label="train")
    a.set(title=f"samples (n={len(train)})", aspect="equal")
    a.legend(fontsize=6)
    return
  rows = [np.concatenate(list(samples[key][:10].reshape(-1, 8, 8)), 1) for key in keys]
  a.imshow(np.concatenate(rows, 0), cmap="gray_r")
  a.set(title=f"rows: {', '.join(keys)} (n={len(train)})", xticks=[], yticks=[])


def plot(path, name, results, extra):
  fig, ax = plt.subplots(2, 3, figsize=(18, 10))
  _curve_panels(ax, results)
  _tradeoff_panel(ax[1, 0], results)
  _sample_panel(ax[1, 1], name, extra)
  fig.suptitle(f"noise regimes: {name}")
  plotting.save(fig, path, dpi=100)


def _best(inter, prefix, field="M_drop_per_quality_loss"):
  """The largest (NaN-last) ``field`` over the interventions whose name starts with ``prefix``."""
  return max(
    (v[field] for k, v in inter.items() if k.startswith(prefix)),
    key=lambda e: -np.inf if np.isnan(e) else e,
  )


def headline(results):
  """Acceptance numbers: where memorisation is induced, and targeted vs global efficiency."""
  out = {}
  for res in results:
    wins = res["window_swap"]["windows"]
    m = np.array([m_third(w) for w in wins])
    inter = res["interventions"]
    best = functools.partial(_best, inter)
    m_lin = np.array([m_third(w) for w in res["window_swap"]["lin_windows"]])
    out[f"n={res['n']}"] = {
      "argmax_window": wins[int(np.argmax(m))]["window"],
      "window_M_1/3": m.tolist(),
      "lin_window_M_1/3": m_lin.tolist(),
      "argmin_lin_window": wins[int(np.argmin(m_lin))]["window"],
      "lin_min_is_interior": bool(0 < int(np.argmin(m_lin)) < len(m_lin) - 1),
      "intervention_window": res["intervention_window"],
      "peak_is_interior": bool(0 < int(np.argmax(m)) < len(m) - 1),
      "untouched_M_1/3": m_third(inter["untouched"]),
      "held_out_M_1/3": m_third(res["held_out_reference"]),
      "best_targeted_efficiency": best("targeted_lam"),
      "best_targeted_wide_efficiency": best("targeted_wide"),
      "best_global_efficiency": best("global"),
      "best_efficiency_nn": {
        p: best(p, "M_drop_per_nn_loss") for p in ("targeted_lam", "targeted_wide", "global")
      },
      "table": {
        k: {
          "M_1/3": round(m_third(v), 4),
          "energy_distance": round(v["energy_distance"], 4),
          "nn_dist_held_out": round(v["nn_dist_held_out"], 4),
        }
        for k, v in inter.items()
      },
    }
  return out


def summarise(results: dict, workdir: str) -> str:
  """The headline numbers of each data set that ran."""
  del workdir
  return "\n".join(f"{name}: {results[name]['headline']}" for name in DATASETS if name in results)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Every data set of ``cfg.datasets``: runs per n, a figure per data set and ``results.json``."""
  results = {"config": cfg.to_dict()}
  key = jax.random.PRNGKey(cfg.seed)
  for g, name in enumerate(DATASETS):
    if name not in cfg.datasets:
      continue
    group = cfg[name]
    ns = group.data.ns
    rows, extra = [], None
    for n in ns:
      res, ex = run_one(name, n, cfg, group, jax.random.fold_in(jax.random.fold_in(key, g), n))
      rows.append(res)
      extra = ex if extra is None or n == ns[len(ns) // 2] else extra
    plot(os.path.join(workdir, f"noise_regimes_{name}.png"), name, rows, extra)
    results[name] = {"runs": rows, "headline": headline(rows)}
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
