"""The LID benchmark on scikit-dimension's manifolds: smoke run, metrics on known inputs, the exact
mixtures' geometry, the fit cache, and memjax's LPCA / MLE / TwoNN against scikit-dimension."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import run_smoke

from experiments import common
from experiments.lid import benchmark, fitting
from memjax import data, lid

skdim = pytest.importorskip("skdim")
pytest.importorskip("pandas")  # BenchmarkManifolds needs it


def _standardised(name, n, seed=3):
  x = benchmark.generate(name, n, seed)
  std = benchmark.standardiser(x)
  return std(x), std


def test_benchmark_smoke(tmp_path):
  res = run_smoke("lid.benchmark", tmp_path)
  cfg = res["config"]
  est = np.load(os.path.join(tmp_path, benchmark.ESTIMATES))
  smoke_cfg = _cfg("smoke")
  keys = [e.key for e in benchmark.estimators(smoke_cfg)]
  assert smoke_cfg.data.manifolds == tuple(res["manifolds"])
  for name, row in res["manifolds"].items():
    d, dim = benchmark.TRUTH[name]
    assert (row["intrinsic_dim"], row["ambient_dim"]) == (d, dim)
    exact = row["exact_score"]
    assert exact == (name == "M1_Sphere")
    want = [k for k in keys if exact or not k.startswith(("flipd_exact", "nb_exact"))]
    assert sorted(row["estimators"]) == sorted(want)
    for key, r in row["estimators"].items():
      v = est[f"{name}/{key}"]
      assert v.shape == (cfg["data"]["num_eval"],)
      # The MAE of the table is the mean absolute error of the per-point estimates written.
      np.testing.assert_allclose(r["mae"], np.mean(np.abs(v.astype(np.float64) - d)), rtol=1e-12)
      np.testing.assert_allclose(r["mean"], np.mean(v), rtol=1e-6)
      assert r["seconds"] > 0
    for m in cfg["models"]:
      assert row["training"][m]["cached"] is False
      assert row["training"][m]["stopping_step"] <= cfg["train"]["steps"]
  # The exact score's FLIPD on the 10-sphere is close to 10 at the fixed t0 (estimator bias only).
  assert abs(res["manifolds"]["M1_Sphere"]["estimators"]["flipd_exact"]["mean"] - 10) < 0.5
  # memjax and scikit-dimension agree inside the run (float64 k-NN on the same data).
  for name in res["manifolds"]:
    for ours, theirs in (("lpca", "skdim_lpca"), ("mle", "skdim_mle"), ("twonn", "skdim_twonn")):
      np.testing.assert_allclose(est[f"{name}/{ours}"], est[f"{name}/{theirs}"], rtol=1e-6)
  summary = res["summary"]
  assert set(summary) == set(keys)
  table = open(os.path.join(tmp_path, benchmark.TABLE)).read()
  for s in summary.values():
    assert f"| {s['label']} |" in table
  for name in res["manifolds"]:
    assert name in table


def _cfg(variant):
  from experiments.lid.configs.benchmark import get_config

  return get_config(variant)


def test_default_and_large_configs_cover_the_issue():
  default, large = _cfg(""), _cfg("large")
  dims = [benchmark.TRUTH[n] for n in default.data.manifolds]
  assert len(dims) >= 10
  assert min(d for d, _ in dims) == 1 and max(d for d, _ in dims) >= 10
  assert max(dim for _, dim in dims) >= 24
  assert set(large.data.manifolds) == set(benchmark.TRUTH) and len(benchmark.TRUTH) == 24
  assert default.lid.t0 in default.lid.t0_grid  # the fixed t0 is stated in advance
  with pytest.raises(ValueError, match="variant"):
    _cfg("huge")


def test_mae_concordance_and_summary_on_known_inputs():
  assert benchmark.mae([1.0, 2.0, 4.0], 2) == pytest.approx(1.0)
  assert benchmark.mae([3.0, 3.0], [1, 5]) == pytest.approx(2.0)
  y = np.array([1.0, 2.0, 3.0])
  assert benchmark.lin_ccc(y, y) == pytest.approx(1.0)
  # x = y + 1: cov = var = 2/3, squared mean gap 1 -> 2(2/3) / (2/3 + 2/3 + 1) = 4/7.
  assert benchmark.lin_ccc(y + 1, y) == pytest.approx(4 / 7)
  # x = 2y: cov 4/3, var x 8/3, var y 2/3, gap 4 -> (8/3) / (8/3 + 2/3 + 4) = 4/11.
  assert benchmark.lin_ccc(2 * y, y) == pytest.approx(4 / 11)
  assert np.isnan(benchmark.lin_ccc(y, np.full(3, 10.0)))  # constant truth: undefined
  row = benchmark.per_manifold_row([1.0, 3.0, 5.0], 2, 1.5)
  assert row["mae"] == pytest.approx(5 / 3) and row["mean"] == pytest.approx(3.0)
  assert row["abs_error_of_mean"] == pytest.approx(1.0) and row["seconds"] == 1.5
  ests = (
    benchmark.Estimator("a", "A", "model", True),
    benchmark.Estimator("g", "G", "skdim", False),
  )
  points = {
    "m1": {"a": np.array([1.0, 2.0]), "g": np.array([1.5, 1.5])},
    "m2": {"a": np.array([3.0, 3.0]), "g": np.array([3.0, 3.0])},
    "m3": {"a": np.array([12.0, 12.0]), "g": np.array([10.0, 10.0])},
  }
  dims = {"m1": 1, "m2": 3, "m3": 12}
  per = {
    n: {
      "intrinsic_dim": dims[n],
      "estimators": {k: benchmark.per_manifold_row(v, dims[n], 1.0) for k, v in p.items()},
    }
    for n, p in points.items()
  }
  s = benchmark.summarise_estimators(per, points, ests)
  # MAE per manifold: a: 0.5, 0, 0 ; g: 0.5, 0, 2.
  assert s["a"]["mean_mae"] == pytest.approx(0.5 / 3)
  assert s["a"]["mean_mae_d_le_10"] == pytest.approx(0.25)
  assert s["g"]["mean_mae"] == pytest.approx(2.5 / 3)
  assert s["g"]["total_seconds"] == pytest.approx(3.0)
  x = np.array([1, 2, 3, 3, 12, 12.0])
  t = np.array([1, 1, 3, 3, 12, 12.0])
  assert s["a"]["lin_ccc_pooled"] == pytest.approx(benchmark.lin_ccc(x, t))
  assert s["a"]["spearman_means_vs_d"] == pytest.approx(1.0)
  acc = benchmark.acceptance(per, ests)["a"]
  assert acc["num_manifolds"] == 2  # d <= 10 only
  assert acc["per_manifold"]["m1"]["within"] and acc["per_manifold"]["m2"]["within"]


def test_standardiser_is_a_similarity_and_keeps_padding():
  x = benchmark.generate("M13b_Spiral", 300, 0)
  z, std = _standardised("M13b_Spiral", 300, 0)
  assert np.all(np.isfinite(z)) and np.allclose(z[:, 3:], -std.mean[3:] / std.scale)
  i, j = np.triu_indices(50, 1)
  dx = np.linalg.norm(x[i] - x[j], axis=1)
  dz = np.linalg.norm(z[i] - z[j], axis=1)
  np.testing.assert_allclose(dz * std.scale, dx, rtol=1e-12)
  assert benchmark.generate("M5a_Helix1d", 10, 4).shape == (10, 3)
  with pytest.raises(ValueError, match="name"):
    benchmark.generate("M99", 10, 0)


@pytest.mark.parametrize("name", ["M1_Sphere", "M9_Affine", "M10a_Cubic"])
def test_exact_mixture_holds_the_standardised_data(name):
  z, std = _standardised(name, 400)
  mix = benchmark.exact_mixture(name, std)
  d, dim = benchmark.TRUTH[name]
  assert all(k == d for k in mix.dims) and mix.ambient_dim == dim
  # Each point lies on one component: zero distance off its span, in-piece coordinates in range.
  dist = np.full(len(z), np.inf)
  for kind, c, f in zip(mix.kinds, np.asarray(mix.centres, np.float64), mix.frames):
    f = np.asarray(f, np.float64)
    par = (z - c) @ f
    off = np.linalg.norm((z - c) - par @ f.T, axis=1)
    if kind == "sphere":
      off = off + np.abs(np.linalg.norm(par, axis=1) - mix.scale)
    else:
      off = off + np.maximum(np.abs(par).max(axis=1) - mix.scale, 0)
    dist = np.minimum(dist, off)
  assert dist.max() < 1e-5 * np.abs(z).max()
  # And the noised log-density is finite there (float64).
  with common.x64(True):
    m64 = mix._replace(
      centres=jnp.asarray(np.asarray(mix.centres), jnp.float64),
      frames=tuple(jnp.asarray(np.asarray(f), jnp.float64) for f in mix.frames),
    )
    logp = data.manifold_mixture_log_prob(m64, jnp.asarray(z[:20]), 0.99, 0.1)
  assert np.all(np.isfinite(np.asarray(logp)))
  assert benchmark.exact_mixture("M7_Roll", std) is None


def test_fit_cache_reuses_the_trained_model(tmp_path):
  cfg = _cfg("smoke")
  cfg.model.hidden = (8,)
  cfg.train.steps = 20
  cfg.train.stopping = fitting.stopping_section(eval_every=10, num=64)
  x = jax.random.normal(jax.random.PRNGKey(0), (200, 3))
  held = jax.random.normal(jax.random.PRNGKey(1), (200, 3))
  key = jax.random.PRNGKey(2)
  _, p1, r1 = fitting.fit_with_stopping(x, held, cfg, key, cache_dir=str(tmp_path))
  _, p2, r2 = fitting.fit_with_stopping(x, held, cfg, key, cache_dir=str(tmp_path))
  assert r1["cached"] is False and r2["cached"] is True and r1["cache_path"] == r2["cache_path"]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)
  assert r2["best_heldout_loss"] == r1["best_heldout_loss"]
  # Another identity (other data) is another entry, trained afresh.
  _, _, r3 = fitting.fit_with_stopping(x + 1.0, held, cfg, key, cache_dir=str(tmp_path))
  assert r3["cached"] is False and r3["cache_path"] != r1["cache_path"]


# ---------------------------------------------------------------------------
# memjax's classical estimators against scikit-dimension (float64, same definitions).


@pytest.fixture(scope="module")
def manifold_data():
  with common.x64(True):
    return {n: _standardised(n, 400)[0] for n in ("M1_Sphere", "M7_Roll", "M4_Nonlinear")}


@pytest.mark.parametrize("name", ["M1_Sphere", "M7_Roll", "M4_Nonlinear"])
def test_lpca_matches_scikit_dimension(manifold_data, name):
  x = manifold_data[name]
  with common.x64(True):
    xj = jnp.asarray(x, jnp.float64)
    ours = np.asarray(lid.lpca(xj, k=40, threshold=0.05, include_self=False, atol=0.0))
    ours_ev = np.asarray(lid.lpca(xj, k=40, explained_variance=0.9, include_self=False, atol=0.0))
  ref = skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(x, n_neighbors=40).dimension_pw_
  np.testing.assert_array_equal(ours, ref)
  ref_ev = skdim.id.lPCA(ver="ratio", alphaRatio=0.9).fit_pw(x, n_neighbors=40).dimension_pw_
  np.testing.assert_array_equal(ours_ev, ref_ev)


@pytest.mark.parametrize("name", ["M1_Sphere", "M7_Roll", "M4_Nonlinear"])
def test_mle_and_twonn_match_scikit_dimension_on_benchmark_manifolds(manifold_data, name):
  x = manifold_data[name]
  with common.x64(True):
    xj = jnp.asarray(x, jnp.float64)
    glob, pw = lid.mle(xj, k=20)
    twonn = {m: float(lid.twonn(xj, method=m)) for m in ("linear", "mle")}
  ref = skdim.id.MLE().fit(x, n_neighbors=20)
  np.testing.assert_allclose(np.asarray(pw), ref.dimension_pw_, rtol=1e-6, atol=0)
  np.testing.assert_allclose(float(glob), ref.dimension_, rtol=1e-6)
  for m, v in twonn.items():
    np.testing.assert_allclose(v, skdim.id.TwoNN(method=m).fit(x).dimension_, rtol=1e-6)
