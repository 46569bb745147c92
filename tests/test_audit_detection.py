"""memjax.audit's detection evidence: the membership baseline, directions, the null audit.

* The counter-example of issue 25: a model that memorises nothing (exact Gaussian score) whose
  generated samples a "memorised generated vs held-out real" comparison would call detectable;
  the audit must label the training-vs-held-out comparison a membership baseline and keep it out
  of the detection table.
* A null audit: the exact score of a Gaussian fitted to the data cannot memorise, so every
  detector scores chance and M_c sits at the held-out chance floor.
* Float64 checks of the pieces against closed forms and brute force: FLIPD at the knee, the
  noisy-state sharpness, the multiset posterior, the bootstrap intervals, per-prompt grouping.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import audit, lid, memorisation, metrics, paths
from memjax.audit import configs, lenses, report


def _gaussian_eps(cov_diag=None, mean=None, cov=None):
  """ε̂(y, t) = σ (ψ² Σ + σ² I)⁻¹ (y − ψ m) of data N(m, Σ) under linear FM."""
  sched = paths.linear_fm()

  def eps(params, y, t):
    psi, sig = sched.psi(t)[:, None], sched.sigma(t)[:, None]
    m = jnp.zeros((1, y.shape[1]), y.dtype) if mean is None else jnp.asarray(mean, y.dtype)[None]
    if cov is None:
      c = jnp.asarray(cov_diag, y.dtype)[None]
      return sig * (y - psi * m) / (psi**2 * c + sig**2)
    S = jnp.asarray(cov, y.dtype)
    eye = jnp.eye(y.shape[1], dtype=y.dtype)

    def one(yi, p, s):
      return s * jnp.linalg.solve(p**2 * S + s**2 * eye, yi - p * m[0])

    return jax.vmap(one)(y, psi[:, 0], sig[:, 0])

  return eps


def _cfg(num_samples):
  cfg = configs.get_config("smoke")
  cfg.sample.update(num_samples=num_samples, rtol=1e-5, atol=1e-5)
  cfg.lid.update(num_t0=4, lpca_k=8)
  cfg.sharpness.num_noisy = 4
  cfg.regimes.enabled = False
  cfg.weight_space.enabled = False
  cfg.summary.bootstrap = 300
  return cfg


def test_counter_example_membership_baseline_is_labelled_and_kept_out_of_detection():
  # Model N(0, diag(1, 1e-4)), data N(0, diag(1, 1e-2)): the generated points are exact model
  # draws (nothing is memorised beyond chance), yet they are thinner than real data.
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  scale = jnp.asarray([[1.0, 0.1]])
  train = np.asarray(jax.random.normal(k1, (64, 2)) * scale)
  held = np.asarray(jax.random.normal(k2, (64, 2)) * scale)
  m = audit.from_function(
    _gaussian_eps(cov_diag=(1.0, 1e-4)), None, parameterisation="eps", data_shape=(2,)
  )
  cfg = _cfg(64)
  rep = audit.run(m, train, jax.random.PRNGKey(1), cfg, held_out=held, mesh=None, progress=False)
  s = rep.summary
  assert "detection_vs_held_out" not in s
  mb = s["membership_baseline"]
  assert "membership" in mb["what"] and "never detection evidence" in mb["what"]
  # The detection table holds generated samples only: its classes are the ratio labels.
  labels = rep.memorisation.memorised[memorisation.c_label(1 / 3)][rep.generation.ok]
  assert 0 < labels.sum() < len(labels)
  for name, row in s["detection"].items():
    assert row["num_positive"] + row["num_negative"] + row["num_nonfinite"] == s["num_scored"]
    assert row["num_positive"] == labels.sum(), name
  # The confounded comparison (memorised GENERATED samples vs held-out REAL points) would call
  # -FLIPD a detector here; the membership baseline (real vs real) does not.
  real = lenses.stateless_scores(m, held, train, rep.lid, jax.random.PRNGKey(3), cfg)
  pos = rep.detectors["neg_flipd"][rep.generation.ok][labels]
  y = np.r_[np.ones(len(pos), bool), np.zeros(len(held), bool)]
  confounded = metrics.auroc(np.r_[pos, real["neg_flipd"]], y)
  assert confounded > 0.8, confounded
  row = mb["detectors"]["neg_flipd"]
  assert row["ci_lo"] < 0.5 < row["ci_hi"] or row["status"].startswith("inverted"), row
  # The page shows the baseline apart, under its own heading.
  page = report.render(rep, cfg)
  assert "Membership baseline (not detection evidence)" in page


def test_null_audit_scores_chance_and_the_held_out_floor():
  # The exact score of a Gaussian FITTED to the data: a model that cannot memorise. Six detectors
  # are tested at once, so the interval is Bonferroni-widened: 1 − 0.05/6 ≈ 0.99.
  key = jax.random.split(jax.random.PRNGKey(4), 3)
  A = jnp.asarray([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [0.0, 0.3, 0.4]])
  draw = lambda k, n: np.asarray(jax.random.normal(k, (n, 3)) @ A.T + jnp.asarray([[1.0, -1, 0]]))
  train, held = draw(key[0], 96), draw(key[1], 96)
  m = audit.from_function(
    _gaussian_eps(mean=train.mean(0), cov=np.cov(train.T)),
    None,
    parameterisation="eps",
    data_shape=(3,),
  )
  cfg = _cfg(96)
  cfg.summary.ci_level = 0.99
  rep = audit.run(m, train, key[2], cfg, held_out=held, mesh=None, progress=False)
  s = rep.summary
  assert 0 < s["num_memorised"] < s["num_scored"] == 96
  assert len(s["detection"]) == 6
  for name, row in s["detection"].items():
    assert row["ci_lo"] <= 0.5 <= row["ci_hi"], (name, row)
    assert row["status"] != "separates", (name, row)
  d = s["M_c_vs_held_out"]
  assert d["within_ci"], d


# ---------------------------------------------------------------------------
# Directions and the report's rows.


def test_direction_is_fixed_and_an_inverted_detector_is_flagged_not_flipped():
  cfg = configs.get_config("smoke").summary
  y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
  s = np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 20)]  # positives LOWER: inverted
  row = lenses.detection_row("neg_flipd", s, y, cfg)
  assert row["auroc"] == 0.0 and row["status"] == lenses.INVERTED
  assert row["direction"].startswith("low FLIPD")
  good = lenses.detection_row("score_sq_det", -s, y, cfg)
  assert good["auroc"] == 1.0 and good["status"] == "separates"
  with pytest.raises(ValueError, match="no direction"):
    lenses.detection_row("some_new_score", s, y, cfg)
  summary = {"fpr": 0.01, "detection": {"score_sq_det": good, "neg_flipd": row}}
  # Rows keep the computed order (no re-sorting by AUROC) and carry the flag.
  assert [r[0] for r in report.summary_rows(summary)] == ["score_sq_det", "neg_flipd"]
  assert report.detection_table_rows(summary)[1][-1] == lenses.INVERTED


def test_detection_level_constant_is_the_lid_papers_vp_t0():
  want = float(paths.noise_to_signal(paths.vp_linear(), jnp.asarray(0.05, jnp.float64)))
  np.testing.assert_allclose(configs.LID_PAPER_NOISE_TO_SIGNAL, want, rtol=1e-5)


# ---------------------------------------------------------------------------
# Float64 pieces.


def test_flipd_at_knee_is_the_curve_knee_and_flags_the_edge_float64():
  sched = paths.vp_linear()
  c = jnp.asarray([[1.0, 1.0, 1e-6]], jnp.float64)  # a 2-D plane in 3-D

  def field(y, t):
    psi, sig = sched.psi(t)[:, None], sched.sigma(t)[:, None]
    return sig * y / (psi**2 * c + sig**2)

  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3), jnp.float64) * jnp.sqrt(c)
  for lo, hi in ((0.01, 0.6), (0.3, 0.6)):
    ratios = np.geomspace(lo, hi, 7)
    t0s = jnp.asarray([paths.time_at_noise_to_signal(sched, r, 100) for r in ratios])
    k = lid.flipd_at_knee(field, x, t0s, sched, parameterisation="eps", curve="concave")
    curves = np.stack(
      [np.asarray(lid.flipd(field, x, t, sched, parameterisation="eps")) for t in t0s]
    )
    np.testing.assert_allclose(k.curves, curves, rtol=1e-10)
    # Kneedle by hand on log σ: concave, decreasing.
    s = np.log(np.asarray(sched.sigma(t0s)))
    xn = (s - s[0]) / (s[-1] - s[0])
    ym = curves.mean(1)
    yn = (ym - ym.min()) / (ym.max() - ym.min())
    i = int(np.argmax(yn - (1 - xn)))
    assert k.index == i and k.t0 == float(t0s[i])
    np.testing.assert_array_equal(k.lid, k.curves[i])
    assert k.on_edge == (i in (0, len(t0s) - 1))


def test_noisy_sharpness_matches_the_gaussian_closed_form_float64():
  c = jnp.asarray([0.5, 2.0], jnp.float64)
  m = audit.from_function(_gaussian_eps(cov_diag=c), None, parameterisation="eps", data_shape=(2,))
  x = np.asarray([[0.3, -1.0], [2.0, 0.5]], np.float64)
  t, K, key = 0.7, 5, jax.random.PRNGKey(2)
  neg_tr, sem, sq = lenses.noisy_sharpness(m, x, None, t, K, key, (None, 8))
  # The same draws: s(y) = −y / (ψ² c + σ²) at y = ψ x + σ ε_k.
  psi, sig = float(m.schedule.psi(jnp.asarray(t))), float(m.schedule.sigma(jnp.asarray(t)))
  eps = np.asarray(jax.random.normal(jax.random.split(key)[0], (K, 2, 2), jnp.float64))
  ys = psi * x[None] + sig * eps
  v = psi**2 * np.asarray(c) + sig**2
  np.testing.assert_allclose(sq, np.mean(np.sum((ys / v) ** 2, axis=-1), axis=0), rtol=1e-10)
  np.testing.assert_allclose(neg_tr, np.sum(1.0 / v), rtol=1e-10)
  np.testing.assert_array_equal(sem, 0.0)
  # The clean-point value is the denoising residual ψ²||D(ψx) − x||²/σ⁴ = ψ²||x / v||² here.
  res = lenses._residual(m, psi * x, None, t, None)
  np.testing.assert_allclose(res, psi**2 * np.sum((x / v) ** 2, axis=-1), rtol=1e-10)


def test_multiset_posterior_weights_copies_by_multiplicity_float64():
  rng = np.random.default_rng(0)
  distinct = rng.normal(size=(4, 3))
  multiset = distinct[[0, 0, 0, 1, 2, 3, 3]]
  y = rng.normal(size=(6, 3))
  sigma = 0.7
  u, counts = np.unique(multiset, axis=0, return_counts=True)
  mw, h = lenses._multiset_posterior(
    jnp.asarray(u), jnp.asarray(np.log(counts)), jnp.asarray(y), sigma
  )
  # Brute force: the posterior over the multiset's ROWS, summed over copies of one point.
  logits = -np.sum((y[:, None] - multiset[None]) ** 2, -1) / (2 * sigma**2)
  w = np.exp(logits - logits.max(1, keepdims=True))
  w /= w.sum(1, keepdims=True)
  grouped = np.stack([w[:, np.all(multiset == p, axis=1)].sum(1) for p in u], axis=1)
  np.testing.assert_allclose(mw, grouped.max(1), rtol=1e-10)
  np.testing.assert_allclose(h, -np.sum(grouped * np.log(grouped), 1), rtol=1e-10)


def test_lid_star_refused_where_not_estimable():
  assert lenses.lid_star_estimable(16, 16, 4).startswith("not estimable")
  assert "rank" in lenses.lid_star_estimable(100, 10, 64)
  assert lenses.lid_star_estimable(100, 20, 8) == ""
  # In the audit: MMH counts read "not estimable" and LID* − FLIPD is not a detector.
  m = audit.from_function(lambda p, x, t: jnp.tanh(x), None, data_shape=(3,))
  cfg = _cfg(6)
  cfg.lid.lpca_k = 12
  cfg.sharpness.noise_to_signal = ()
  train = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 3)))
  rep = audit.run(m, train, jax.random.PRNGKey(1), cfg, mesh=None, progress=False)
  assert rep.summary["mmh_counts"].startswith("not estimable")
  assert "lid.lpca_k = 12" in rep.summary["mmh_counts"]  # names the audit's config key
  assert "LID* and the MMH classes are not estimable: lid.lpca_k = 12" in rep.summary["verdict"]
  assert "lid_star_minus_flipd" not in rep.detectors
  assert np.isnan(rep.lid.lid_star).all()


def test_degenerate_danger_zone_reads_none_found():
  from memjax.audit.lenses import Regimes

  sig = np.geomspace(0.1, 10, 5)
  b = {"danger_lo": 1.0, "danger_hi": 1.0, "sigma_small": 0.1, "sigma_large": 5.0, "threshold": 0.8}
  r = Regimes(sig, sig, sig, sig, b, sig, sig, True)
  dz = lenses._danger_zone(r, configs.get_config().regimes)
  assert not dz["found"] and dz["text"] == "none found" and np.isnan(dz["lo"])
  r = r._replace(boundaries=dict(b, danger_hi=3.0))
  assert lenses._danger_zone(r, configs.get_config().regimes)["text"] == "VE σ ∈ [1, 3]"


# ---------------------------------------------------------------------------
# memjax.metrics: bootstrap intervals and per-prompt grouping.


def test_auroc_ci_resamples_within_class_float64():
  from sklearn import metrics as skm

  rng = np.random.default_rng(1)
  s = np.r_[rng.normal(1, 1, 15), rng.normal(0, 1, 25), [0.5, 0.5]]
  y = np.r_[np.ones(15, bool), np.zeros(25, bool), [True, False]]
  a, lo, hi = metrics.auroc_ci(s, y, num_resamples=50, seed=3)
  assert a == skm.roc_auc_score(y, s) and lo <= a <= hi
  # Brute force with the same generator: sklearn on each stratified resample.
  g = np.random.default_rng(3)
  pos, neg = s[y], s[~y]
  ip = g.integers(0, len(pos), (50, len(pos)))
  ineg = g.integers(0, len(neg), (50, len(neg)))
  boot = [
    skm.roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos[i], neg[j]])
    for i, j in zip(ip, ineg)
  ]
  np.testing.assert_allclose([lo, hi], np.quantile(boot, [0.025, 0.975]), rtol=1e-12)
  with pytest.raises(ValueError, match="`level`"):
    metrics.auroc_ci(s, y, level=1.0)
  d, dlo, dhi = metrics.mean_diff_ci(np.ones(10), np.zeros(10), num_resamples=20)
  assert d == dlo == dhi == 1.0


def test_group_by_prompt_averages_generations():
  scores = np.asarray([1.0, 2.0, 10.0, 20.0, 3.0, 5.0])
  prompts = np.asarray([0, 0, 1, 1, 2, 2])
  mem = np.asarray([1, 0, 1, 1, 0, 0], bool)
  ids, s, y = metrics.group_by_prompt(scores, prompts, mem)
  np.testing.assert_array_equal(ids, [0, 1, 2])
  np.testing.assert_array_equal(s.mean(1), [1.5, 15.0, 4.0])
  np.testing.assert_array_equal(y, [True, True, False])
  with pytest.raises(ValueError, match="same number of generations"):
    metrics.group_by_prompt(scores[:5], prompts[:5], mem[:5])


# ---------------------------------------------------------------------------
# The planted benchmark (experiments/audit/planted.py) at smoke size: the 8-D toy, 3 seeds.


def test_planted_benchmark_smoke(tmp_path):
  from experiments.audit import planted
  from experiments.audit.configs.planted import get_config

  cfg = get_config("smoke")
  res = planted.run(cfg, str(tmp_path))
  assert os.path.exists(tmp_path / planted.FIGURE) and os.path.exists(tmp_path / planted.TABLE)
  assert len(res["per_seed"]) == len(cfg.seeds) >= 3
  tab = res["table"]
  assert set(tab) == set(planted.LABELS)
  for rows in tab.values():
    assert set(rows) >= {"neg_flipd", "neg_trace_det", "score_sq_det"}
    for name, r in rows.items():
      assert r["direction"] == lenses.detector_direction(name)
      assert r["num_seeds_used"] == 3
      assert r["ci_lo"] <= r["auroc"] <= r["ci_hi"] or not np.isfinite(r["auroc"])
      if r["auroc"] < 0.5:
        assert r["status"].startswith(lenses.INVERTED)
  for s in res["per_seed"]:
    # Generated positives AND generated negatives in every seed; planted copies are memorised.
    assert 0 < s["num_memorised"] < s["num_scored"]
    assert s["planted_and_memorised"] >= 0.8 * s["num_planted_copies"] > 0
    assert "membership_baseline" in s and "detection_vs_held_out" not in s["detection"]


def test_planted_digits_data_holds_the_copies():
  from experiments.audit import planted
  from experiments.audit.configs.planted import get_config

  d = get_config("smoke_digits").digits
  pl = planted.make_digits(d, jax.random.PRNGKey(0))
  assert pl.train.shape == (d.num_unique + d.num_planted * d.copies, 64)
  assert len(np.unique(pl.train, axis=0)) == d.num_unique + d.num_planted
  for s in range(d.num_planted):
    rows = pl.train[pl.source == s]
    assert len(rows) == d.copies and (rows == rows[0]).all()
  # Held-out digits are disjoint from the training digits.
  assert not (pl.held_out[:, None] == pl.train[None]).all(-1).any()


def test_planted_conditional_toy_data_plants_the_first_classes():
  from experiments.audit import planted
  from experiments.audit.configs.planted import get_config

  c = get_config("smoke_cond").toy_cond
  pl, labels, held_labels = planted.make_toy_cond(c, 0)
  assert pl.train.shape == (c.num_classes * c.per_class, c.dim)
  assert np.array_equal(np.bincount(labels), np.full(c.num_classes, c.per_class))
  assert len(held_labels) == len(pl.held_out) == c.num_classes * c.held_per_class
  for k in range(c.num_classes):
    rows = pl.train[labels == k]
    distinct = len(np.unique(rows, axis=0))
    want = (
      c.per_class - round(c.copy_fraction * c.per_class) + 1 if k < c.num_planted else c.per_class
    )
    assert distinct == want, (k, distinct)
    assert (pl.source[labels == k] >= 0).any() == (k < c.num_planted)


@pytest.mark.slow
def test_planted_benchmark_conditional_smoke(tmp_path):
  from experiments.audit import planted
  from experiments.audit.configs.planted import get_config

  res = planted.run(get_config("smoke_cond"), str(tmp_path))
  tab = res["table"]
  assert {"per_prompt_ratio", "per_prompt_planted"} <= set(tab)
  assert {"wen_eps", "hs_detector"} <= set(tab["per_prompt_planted"])
  for r in tab["per_prompt_planted"].values():
    assert r["num_seeds_used"] == 3  # planted identity: both kinds of prompt in every seed
