"""Riemannian-Laplace toy experiments: :smoke configs end to end, paired comparison recorded."""

import numpy as np
import pytest
from smoke import check_geodesic_geometry, load_config, run_smoke

from memjax import memorisation


def _check_sweep(res):
  assert res["sweep"], "no eta rows"
  check_geodesic_geometry(res)
  names = res["config"]["posterior"]["samplers"]
  num = res["config"]["posterior"]["num_posterior"]
  cs = res["config"]["eval"]["cs"]
  for row in res["sweep"]:
    assert set(row["sampling"]) == set(names)
    for g in row["sampling"].values():
      assert g["total"] == num and g["successful"] + g["failed"] == g["total"]
    assert "by_result" in row["sampling"]["riemannian"]  # the geodesic solver's outcomes
    p = row["paired"]
    assert p["total"] == num and p["kept"] + p["excluded"] == p["total"]
    assert p["kept"] <= min(g["successful"] for g in row["sampling"].values())
    if p["kept"]:
      for kind in names:
        assert row[kind]["num_models"] == p["kept"]
        assert np.isfinite(row[kind]["heldout_fm_loss"]["mean"])
        mem = row[kind]["memorisation"]
        assert len(mem["M_c"]) == len(cs)
        # The true-sample baseline beside every M_c.
        assert set(mem["M_c_true_samples"]) == set(mem["M_c"]) == set(mem["M_c_excess"])
  for claim in res["claims"].values():
    assert {"per_eta", "riemannian_lower_at_all_eta"} <= set(claim)
  # Stationary θ*, several triple draws, and what each metric rewards.
  draws = res["draws"]
  assert len(draws) == res["config"]["posterior"]["num_triple_draws"] >= 2
  for d in draws:
    assert d["fit"]["grad_norm"] <= 1e-6 * d["fit"]["grad_norm_before_refine"]  # tilt: exact
    assert d["sweep"] and d["claims"]
  agree = res["correction_agreement"]["per_eta"]
  assert len(agree) == len(res["sweep"]) and agree[0]["per_draw"][0]["draw"] == 1
  assert {"heldout_fm_loss", "memorisation"} <= set(res["metric_notes"])


def test_laplace_configs_follow_the_papers():
  # Issue 13: subspace posterior, the papers' c grid without 1, refined θ*, ≥ 2 triple draws.
  for name in ("laplace.two_point_1d", "laplace.toy_2d", "laplace.images"):
    for variant in ("", "smoke") if name != "laplace.images" else ("digits", "smoke"):
      cfg = load_config(name, variant)
      assert cfg.posterior.mode == "subspace", (name, variant)
      assert 1.0 not in cfg.eval.cs and any(abs(c - 1 / 3) < 1e-12 for c in cfg.eval.cs)
      assert cfg.posterior.stationary in ("tilt", "refine") and cfg.posterior.refine_tol > 0
      assert cfg.posterior.num_triple_draws >= 2
      # Subspace velocities are η (λ+α)^{-1/2} in k directions: η is in posterior std units.
      assert min(cfg.posterior.etas) >= 0.5 or variant == "smoke"


def test_two_point_1d_smoke(tmp_path):
  res = run_smoke("laplace.two_point_1d", tmp_path)
  _check_sweep(res)
  row = res["sweep"][0]
  kl = row["euclidean"]["kl_target_vs_kde"]
  assert len(kl) == len(res["config"]["eval"]["kl_target_stds"])
  assert all(np.isfinite(v) for v in kl.values())
  assert row["euclidean"]["symmetry_score"]["mean"] >= 0
  # The 1D target's true samples are all "memorised" at c = 1/3 (|x| > 0.27): the baseline is 1.
  base = res["map"]["baseline_true_samples"]["memorisation"]["M_c"]
  assert base[memorisation.c_label(1 / 3)] > 0.99
  # The held-out loss is on target samples, not on the two training points.
  assert res["map"]["baseline_true_samples"]["num"] == res["config"]["eval"]["num_heldout_samples"]


def test_toy_2d_smoke(tmp_path):
  res = run_smoke("laplace.toy_2d", tmp_path)
  _check_sweep(res)
  assert np.isfinite(res["map"]["true_log_likelihood_mean"])
  assert res["map"]["baseline_true_samples"]["num"] == res["config"]["data"]["num_test"]
  # Riemannian samples keep the MAP's held-out loss better than Euclidean ones at every η (the
  # geodesic turns speed into loss height): the smoke reads 5.60 vs 5.95 at η = 4 (MAP 5.59).
  assert res["claims"]["heldout_fm_loss"]["riemannian_lower_at_all_eta"]


def test_frontier_smoke(tmp_path):
  res = run_smoke(
    "laplace.frontier", tmp_path, overrides={"quality.cache_dir": str(tmp_path / "classifier")}
  )
  names = res["config"]["posterior"]["samplers"]
  assert set(names) == {"euclidean", "linearised"}
  for row in res["seeds"]:
    assert row["fit"]["alpha_rule"] == "evidence_remainder" and row["alpha"] > 0
    assert np.isfinite(row["fit"]["min_hessian_eigenvalue"])
    for name in names:
      cells = row["methods"][name]["cells"]
      assert cells and all(c["sampling"]["total"] == 2 for c in cells)
      for c in cells:
        if "digits_fd" in c:
          assert c["digits_fd"] > 0 and 0 <= c["precision"] <= 1 and 0 <= c["recall"] <= 1
    assert row["single"]["euclidean"][0]["eta"] == 8.0
  assert len(res["comparison"]) == len(res["config"]["frontier"]["cs"])
  for v in res["comparison"].values():
    assert v["verdict"].startswith("c=")
    assert v["bootstrap"] is None or v["bootstrap"]["paired"]
  floor = res["reference"]["fd_noise_floor"]
  assert floor["mean"] > 0 and floor["repeats"] == 3 and np.isfinite(floor["sd"])
  for row in res["seeds"]:
    f = row["fit"]
    # GGN pairing of the linearised sampler (default), its values >= 0 up to round-off.
    assert f["curvature_linearised"] == "ggn" and min(f["ggn_ritz_values"]) > -1e-6
    assert f["loss_name"] == "tilted_curvature_loss" and f["stationary"] == "tilt"
    # The papers' mean L_FM (s = 1/B, the default since issue 26); α̂ with the remaining
    # directions is the one used, and it is not below the low-rank α̂ (Jensen, remaining λ ≥ 0).
    assert f["loss_scale"] == pytest.approx(1.0 / res["config"]["posterior"]["num_triples"])
    assert f["evidence"]["remainder_probes"] == 4
    ev = f["evidence"]
    assert ev["alpha_with_remainder"] >= ev["alpha_low_rank"]
    assert row["alpha"] == pytest.approx(ev["alpha_with_remainder"])


@pytest.mark.slow  # the frontier smoke's code paths plus an all-weights Lanczos
def test_subsets_smoke(tmp_path):
  res = run_smoke(
    "laplace.subsets", tmp_path, overrides={"quality.cache_dir": str(tmp_path / "classifier")}
  )
  rows = {r["subset"]: r for r in res["subsets"]}
  assert set(rows) == {"first", "all"}
  assert rows["first"]["num_params"] < rows["all"]["num_params"]
  assert rows["all"]["k"] == 4
  # Cauchy interlacing: on the same triples the first layer's data-term Hessian is a principal
  # submatrix of the all-weights one, so its top eigenvalue cannot be larger (1.6 vs 641 here).
  assert rows["first"]["top_ritz"] <= rows["all"]["top_ritz"] * (1 + 1e-3)
  for r in rows.values():
    assert r["lanczos_seconds"] > 0 and r["alpha"] > 0
    for c in r["cells"]:
      assert c["samples_per_second"] > 0
  assert "| subset | P |" in res["table"]


# --- The frontier's comparison logic on constructed points (no model).


def test_frontier_envelope_gap_and_verdict():
  from experiments.laplace import frontier

  # A: M falls from 1 to 0.2 as FD rises 10 → 30; B: reaches the same M at lower FD.
  a = [(10.0, 1.0), (20.0, 0.8), (30.0, 0.2)]
  b = [(10.0, 1.0), (15.0, 0.5), (30.0, 0.1)]
  qs = np.asarray([9.0, 10.0, 17.0, 25.0, 30.0])
  np.testing.assert_allclose(frontier.envelope(a, qs, "step"), [np.nan, 1.0, 1.0, 0.8, 0.2])
  np.testing.assert_allclose(frontier.envelope(b, qs, "step"), [np.nan, 1.0, 0.5, 0.5, 0.1])
  gap, rng = frontier.frontier_gap(a, b, num=20001, kind="step")
  # Exact area: ∫ (f_A − f_B) over [10, 30] / 20 = (5·0 + 5·0.5 + 10·0.3 + 0·…)/20 = 0.275.
  np.testing.assert_allclose(gap, (5 * 0.0 + 5 * 0.5 + 10 * 0.3) / 20, atol=2e-3)
  assert rng == (10.0, 30.0)
  # The interpolated path: ∫ over [10, 30] of the two piecewise-linear curves, exactly.
  gap_path, _ = frontier.frontier_gap(a, b, num=200001)
  f_a = lambda q: np.interp(q, [10, 20, 30], [1.0, 0.8, 0.2])
  f_b = lambda q: np.interp(q, [10, 15, 30], [1.0, 0.5, 0.1])
  q = np.linspace(10, 30, 400001)
  np.testing.assert_allclose(gap_path, np.trapezoid(f_a(q) - f_b(q), q) / 20, atol=1e-5)
  # A method stuck at the MAP's quality has no common range: reported, not a 0 gap.
  g, _ = frontier.frontier_gap(a, [(10.0, 1.0)])
  assert g is None
  assert "no common" in frontier.verdict("euclidean", "riemannian", 0.5, None, None)
  assert "riemannian dominates" in frontier.verdict(
    "euclidean", "riemannian", 0.5, 0.2, {"ci95": [0.1, 0.3]}
  )
  assert "euclidean dominates" in frontier.verdict(
    "euclidean", "riemannian", 0.5, -0.2, {"ci95": [-0.3, -0.1]}
  )
  assert "neither" in frontier.verdict("euclidean", "riemannian", 0.5, 0.0, {"ci95": [-0.1, 0.1]})
  ranged = frontier.verdict(
    "euclidean", "riemannian", 0.5, 0.0, {"ci95": [-0.1, 0.1]}, [(60.1, 61.1), (59.0, 59.0)]
  )
  assert "digits-FD (common range [60.1, 61.1]):" in ranged  # empty per-seed ranges are left out


def test_frontier_bootstrap_recovers_a_known_gap():
  from experiments.laplace import frontier, posterior_cells

  rng = np.random.default_rng(0)
  held = rng.normal(size=(400, 3))

  def cell(shift, frac):
    n = 300
    r = np.where(np.arange(n) < frac * n, 0.01, 0.9)  # M_c(c=0.5) = frac
    return posterior_cells.CellData(r, rng.normal(size=(n, 3)) + shift)

  # Euclidean reaches M = 0.2 only far from the data; Riemannian at a small shift.
  per_seed = {
    s: {
      "euclidean": [cell(0.0, 1.0), cell(1.0, 0.9), cell(2.0, 0.2)],
      "riemannian": [cell(0.0, 1.0), cell(1.0, 0.3), cell(2.0, 0.2)],
    }
    for s in range(3)
  }
  ci = frontier.bootstrap_gap(per_seed, "euclidean", "riemannian", 0.5, held, 40, 0)
  assert ci["num"] == 40
  assert ci["ci95"][0] > 0.1  # Riemannian memorises less at equal FD: a positive gap


# --- Issue 26: interpolated frontier, paired bootstrap, FD noise floor.


def test_frontier_path_envelope_interpolates_along_eta():
  from experiments.laplace import frontier

  # η order: MAP (10, 1.0) → (20, 0.6) → (18, 0.5) → (30, 0.1): the path backtracks in FD.
  pts = [(10.0, 1.0), (20.0, 0.6), (18.0, 0.5), (30.0, 0.1)]
  qs = np.asarray([9.0, 10.0, 15.0, 19.0, 24.0, 30.0, 31.0])
  # First crossing along the path: 15 and 19 on the first segment, 24 on the last.
  want = [np.nan, 1.0, 1.0 - 0.4 * 0.5, 1.0 - 0.4 * 0.9, 0.5 - 0.4 * 0.5, 0.1, np.nan]
  np.testing.assert_allclose(frontier.envelope(pts, qs), want)
  np.testing.assert_allclose(frontier.envelope([(10.0, 1.0)], [10.0, 11.0]), [1.0, np.nan])
  with pytest.raises(ValueError, match="`kind`"):
    frontier.envelope(pts, qs, kind="hull")


def _tradeoff_cells(etas, rng, n=128, dim=4, noisy=True):
  """Cells on the true trade-off FD = 60 + η/2, M = 1 − η/64 (MAP: η = 0)."""
  from experiments.laplace import posterior_cells

  cells = []
  for eta in etas:
    z = rng.normal(size=(n, dim)) if noisy else np.zeros((n, dim))
    shift = np.sqrt(60.0 + eta / 2) / np.sqrt(dim)
    p = 1.0 - eta / 64
    u = rng.uniform(size=n) if noisy else (np.arange(n) + 0.5) / n
    r = np.where(u < p, 0.0, 1.0)  # M_c (c = 0.5) ~ Binomial(n, p) / n
    cells.append(posterior_cells.CellData(r, z + shift))
  return cells


def test_frontier_equal_tradeoff_counterexample_has_a_ci_containing_zero():
  """The issue-26 counter-example: one true trade-off, grids ×2 (Euclidean) and ×4 (geodesic)."""
  from experiments.laplace import frontier

  e_grid = [4.0 * 2**i for i in range(5)]  # 4 … 64
  g_grid = [4.0 * 4**i for i in range(3)]  # 4, 16, 64
  exact = lambda etas: [(60.0 + e / 2, 1.0 - e / 64) for e in [0.0] + etas]
  # Noise-free: the step envelope is biased by the grid (the issue's −0.132), the path is exact.
  g_step, _ = frontier.frontier_gap(exact(e_grid), exact(g_grid), num=4001, kind="step")
  g_path, rng_fd = frontier.frontier_gap(exact(e_grid), exact(g_grid), num=4001)
  np.testing.assert_allclose(g_step, -0.132, atol=2e-3)
  assert abs(g_path) < 1e-12 and rng_fd == (60.0, 92.0)
  # With binomial M noise and FD noise, 5 seeds, the MAP cell shared by both methods per seed.
  rng = np.random.default_rng(1)
  held = rng.normal(size=(4000, 4))
  per_seed = {}
  for s in range(5):
    map_cell = _tradeoff_cells([0.0], rng)[0]
    per_seed[s] = {
      "euclidean": [map_cell] + _tradeoff_cells(e_grid, rng),
      "riemannian": [map_cell] + _tradeoff_cells(g_grid, rng),
    }
  ci = frontier.bootstrap_gap(per_seed, "euclidean", "riemannian", 0.5, held, 100, 0)
  assert ci["paired"] and ci["num"] == 100 and ci["num_no_common"] == 0
  lo, hi = ci["ci95"]
  assert lo < 0 < hi, ci
  # The issue-16 estimator on the same data excludes 0 (its bias): the test can fail.
  ci_step = frontier.bootstrap_gap(per_seed, "euclidean", "riemannian", 0.5, held, 100, 0, "step")
  assert ci_step["ci95"][1] < 0, ci_step


def test_frontier_bootstrap_is_paired_and_reports_missing_ranges():
  from experiments.laplace import frontier, posterior_cells

  rng = np.random.default_rng(2)
  held = rng.normal(size=(1000, 3))
  cells = _tradeoff_cells([0.0, 8.0, 32.0], rng, n=64, dim=3)
  # Identical methods: the paired draw gives a gap of exactly 0 in every replicate.
  same = {s: {"euclidean": cells, "riemannian": list(cells)} for s in range(3)}
  ci = frontier.bootstrap_gap(same, "euclidean", "riemannian", 0.5, held, 30, 0)
  assert ci["ci95"] == [0.0, 0.0] and ci["num"] == 30
  # A method that never leaves the MAP: no CI (not [0, 0]), with the reason.
  stuck = {0: {"euclidean": cells, "riemannian": cells[:1]}}
  ci = frontier.bootstrap_gap(stuck, "euclidean", "riemannian", 0.5, held, 30, 0)
  assert ci["ci95"] is None and ci["num"] == 0 and "never leaves" in ci["reason"]
  assert "no bootstrap CI" in frontier.verdict("euclidean", "riemannian", 0.5, 0.0, ci)
  # A cell that differs from the MAP in ONE image: the replicates that do not draw it have no
  # common range; they are counted, and the CI is over the others.
  n = 10
  base = rng.normal(size=(n, 3))
  moved = base.copy()
  moved[0] += 5.0
  r = np.zeros(n)
  map_cell = posterior_cells.CellData(r, base)
  one = {
    0: {
      "euclidean": [map_cell, posterior_cells.CellData(r, base + 1.0)],
      "riemannian": [map_cell, posterior_cells.CellData(r, moved)],
    }
  }
  ci = frontier.bootstrap_gap(one, "euclidean", "riemannian", 0.5, held, 400, 0)
  # P(image 0 not drawn) = 0.9^10 ≈ 0.35.
  assert 0.25 < ci["num_no_common"] / 400 < 0.45
  assert ci["num"] + ci["num_no_common"] == 400 and ci["ci95"] is not None
  assert "no common range in" in frontier.verdict("euclidean", "riemannian", 0.5, 0.0, ci)


def test_fd_noise_floor_against_an_independent_frechet_distance():
  import scipy.linalg

  from experiments.laplace import frontier

  rng = np.random.default_rng(3)
  feats = rng.normal(size=(300, 3)) @ np.diag([1.0, 2.0, 0.5])
  fl = frontier.fd_noise_floor(feats, 50, 4, 7)

  def fd(a, b):
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(ca @ cb))
    return float(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * root))

  perm_rng = np.random.default_rng(7)
  want, ref = [], []
  for _ in range(4):
    p = perm_rng.permutation(300)
    want.append(fd(feats[p[:50]], feats[p[50:100]]))
    ref.append(fd(feats[p[:50]], feats))
  np.testing.assert_allclose(fl["values"], want, rtol=1e-8)
  np.testing.assert_allclose([fl["mean"], fl["sd"]], [np.mean(want), np.std(want, ddof=1)])
  np.testing.assert_allclose(
    [fl["vs_reference"]["mean"], fl["vs_reference"]["sd"]],
    [np.mean(ref), np.std(ref, ddof=1)],
    rtol=1e-8,
  )
  # Sampling noise shrinks with n.
  assert frontier.fd_noise_floor(feats, 150, 4, 7)["mean"] < fl["mean"]
  with pytest.raises(ValueError, match="`n`"):
    frontier.fd_noise_floor(feats, 151, 2, 0)
  # A common range inside the floor: no equal-quality comparison, whatever the CI.
  floor = {"mean": 2.0, "sd": 0.5, "n": 128}
  ci = {"ci95": [-0.3, -0.1], "num_replicates": 10}
  v = frontier.verdict("euclidean", "riemannian", 1 / 3, -0.2, ci, [(60.1, 61.1)], floor)
  assert "no equal-quality comparison" in v and "noise floor" in v
  v = frontier.verdict("euclidean", "riemannian", 1 / 3, -0.2, ci, [(60.1, 65.1)], floor)
  assert "euclidean dominates" in v


@pytest.mark.slow  # ~110 s under load: a UNet geodesic compile (the frontier smoke covers the rest)
def test_loss_scale_smoke(tmp_path):
  res = run_smoke(
    "laplace.loss_scale", tmp_path, overrides={"quality.cache_dir": str(tmp_path / "classifier")}
  )
  rows = res["scales"]
  b = res["config"]["posterior"]["num_triples"]
  assert [r["scale"] for r in rows] == ["mean", "sum"]
  np.testing.assert_allclose([r["s"] for r in rows], [1.0 / b, 1.0])
  for r in rows:
    assert r["loss_name"] == "tilted_curvature_loss" and r["grad_norm"] < 1e-3
    for cl in r["cells"]:
      rie, euc = cl["riemannian"], cl["euclidean"]
      # Euclidean: ||θ_E − θ*|| = ||v|| exactly; a geodesic of G from a stationary θ* cannot
      # exceed ||v|| in displacement or in |ΔL̃| (up to the solver's tolerance).
      np.testing.assert_allclose(euc["displacement_over_v"], 1.0, rtol=1e-4)
      if rie["displacement"] is not None:
        assert rie["displacement_over_v"] <= 1.0 + 1e-2
        assert rie["delta_loss_over_v"] <= 1.0 + 1e-2


def test_quality_excluded_indices_match_exact_pixels():
  from experiments.laplace import quality
  from memjax import data

  x, _ = data.load_digits(flatten=True)
  pick = np.asarray([5, 17, 17, 1000])
  np.testing.assert_array_equal(quality.excluded_indices(x, x[pick]), [5, 17, 1000])
  with pytest.raises(ValueError, match="`exclude`"):
    quality.excluded_indices(x, x[:2] + 1e-3)


def test_pipeline_loss_scale_setting_and_linearised_curvature():
  import ml_collections

  from experiments.laplace import pipeline

  assert pipeline.resolve_loss_scale("sum", 32) == 1.0
  assert pipeline.resolve_loss_scale("mean", 32) == 1.0 / 32
  assert pipeline.resolve_loss_scale(0.25, 32) == 0.25
  for bad in ("median", -1.0, float("nan"), True):
    with pytest.raises(ValueError, match="posterior.loss_scale"):
      pipeline.resolve_loss_scale(bad, 32)
  pc = ml_collections.ConfigDict({"samplers": ("euclidean",), "curvature": "fisher"})
  with pytest.raises(ValueError, match="posterior.curvature"):
    pipeline.sampler_fits(None, pc, None)


def test_frontier_verdict_table_reads_each_comparison():
  from experiments.laplace import frontier

  floor = {"mean": 15.2, "sd": 6.5, "n": 128}

  def entry(gap, ci, width):
    inside = width <= floor["mean"]
    boot = None if ci is None else {"ci95": ci, "paired": True}
    return {
      "c": 1 / 3,
      "gap_mean": gap,
      "bootstrap": boot,
      "fd_range_width_mean": width,
      "inside_fd_noise_floor": inside,
    }

  res = {
    "reference": {"fd_noise_floor": floor},
    "seeds": [{}] * 5,
    "comparison": {
      "euclidean_vs_riemannian@0.3333": entry(-0.2, (-0.3, -0.1), 30.0),
      "euclidean_vs_linearised@0.3333": entry(0.1, (0.05, 0.2), 20.0),
      "riemannian_vs_linearised@0.3333": entry(0.0, (-0.1, 0.1), 16.0),
      "euclidean_vs_riemannian@0.5": entry(-0.2, (-0.3, -0.1), 3.0),  # inside the floor
      "euclidean_vs_linearised@0.5": entry(None, None, 0.0),
    },
  }
  rows = frontier.verdict_table({"first, mean": res}).splitlines()[2:]
  words = [r.rsplit("|", 2)[1].strip() for r in rows]
  assert words == [
    "euclidean dominates",
    "linearised dominates",
    "neither (CI contains 0)",
    "no equal-quality comparison",
    "no equal-quality comparison",
  ]
  assert (
    "| first, mean | euclidean − riemannian | 0.333 | 5 | -0.200 | [-0.300, -0.100] |" in rows[0]
  )
