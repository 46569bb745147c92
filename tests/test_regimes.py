"""regimes: empirical denoiser, concentration, shell coverage, D_lin, PF sampler against
independent references.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import data, denoisers, memorisation, metrics, neighbours, paths, regimes, sampling

KEY = jax.random.PRNGKey(0)
TRAIN = np.asarray(jax.random.normal(KEY, (37, 3)), np.float64) * np.array([1.5, 1.0, 0.5])
QUERIES = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (11, 3)), np.float64) * 2.0


def np_posterior(train, y, sigma, psi=1.0):
  """Brute-force numpy reference: full (Q, N) logits."""
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(y),))
  logits = -np.sum((y[:, None, :] - psi * train[None]) ** 2, -1) / (2 * sigma[:, None] ** 2)
  mx = logits.max(1, keepdims=True)
  w = np.exp(logits - mx)
  z = w.sum(1, keepdims=True)
  w /= z
  ent = -np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0), 1)
  return w @ train, (np.log(z) + mx)[:, 0], w.max(1), ent, w


@pytest.mark.parametrize("sigma", [0.05, 0.7, 4.0])
@pytest.mark.parametrize("train_chunk,query_chunk", [(1, 3), (5, 4), (37, 11), (64, 512)])
def test_posterior_matches_bruteforce(sigma, train_chunk, query_chunk):
  post = denoisers.posterior(
    TRAIN, QUERIES, sigma, train_chunk=train_chunk, query_chunk=query_chunk
  )
  den, log_z, wmax, ent, _ = np_posterior(TRAIN, QUERIES, sigma)
  np.testing.assert_allclose(post.denoiser, den, atol=1e-12)
  np.testing.assert_allclose(post.log_norm, log_z, rtol=1e-12, atol=1e-9)
  np.testing.assert_allclose(post.max_weight, wmax, atol=1e-12)
  np.testing.assert_allclose(post.entropy, ent, atol=1e-10)
  np.testing.assert_allclose(post.n_eff, np.exp(ent), rtol=1e-10)


def test_per_query_sigma_psi_weights_and_score():
  sig = np.linspace(0.2, 2.0, len(QUERIES))
  post = denoisers.posterior(TRAIN, QUERIES, sig, psi=0.6, train_chunk=8)
  den, _, _, _, w = np_posterior(TRAIN, QUERIES, sig, psi=0.6)
  np.testing.assert_allclose(post.denoiser, den, atol=1e-12)
  np.testing.assert_allclose(
    denoisers.posterior_weights(TRAIN, QUERIES, sig, psi=0.6), w, atol=1e-12
  )
  # Score = gradient of the log mixture density, by autodiff of an independent log-sum-exp.
  logp = lambda y, s: jax.scipy.special.logsumexp(
    -jnp.sum((y[None] - 0.6 * TRAIN) ** 2, -1) / (2 * s**2)
  )
  ref = jax.vmap(jax.grad(logp))(jnp.asarray(QUERIES), jnp.asarray(sig))
  np.testing.assert_allclose(
    denoisers.empirical_score(TRAIN, QUERIES, sig, psi=0.6), ref, atol=1e-10
  )


def test_small_sigma_denoiser_returns_training_points():
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), TRAIN.shape))
  for sigma in (1e-2, 1e-3):
    den = denoisers.empirical_denoiser(TRAIN, TRAIN + sigma * z, sigma)
    np.testing.assert_allclose(den, TRAIN, atol=1e-12)
  # Off the training set too: the output is the nearest training point.
  nn = neighbours.nearest_two(QUERIES, TRAIN).i1
  np.testing.assert_allclose(
    denoisers.empirical_denoiser(TRAIN, QUERIES, 1e-3), TRAIN[np.asarray(nn)], atol=1e-12
  )


def test_linear_denoiser_matches_dense_wiener_formula():
  lg = denoisers.fit_linear_gaussian(TRAIN)
  mu = TRAIN.mean(0)
  cov = (TRAIN - mu).T @ (TRAIN - mu) / len(TRAIN)
  for s in (0.1, 1.0, 5.0):
    ref = mu + (cov @ np.linalg.solve(cov + s**2 * np.eye(3), (QUERIES - mu).T)).T
    np.testing.assert_allclose(denoisers.linear_denoiser(lg, QUERIES, s), ref, atol=1e-12)
  # Rank-deficient data (N < d): directions outside the span are denoised to the mean.
  low = TRAIN[:2]
  out = np.asarray(denoisers.linear_denoiser(denoisers.fit_linear_gaussian(low), QUERIES, 0.5))
  normal = np.cross(low[0] - low.mean(0), [1.0, 0.0, 0.0])
  np.testing.assert_allclose((out - low.mean(0)) @ normal, 0.0, atol=1e-10)


def test_large_sigma_gap_to_linear_shrinks():
  sigmas = np.array([2.0, 4.0, 8.0, 16.0, 32.0])
  rho = np.asarray(regimes.linearity_gap(jax.random.PRNGKey(3), TRAIN, sigmas, num_noise=8))
  assert np.all(np.diff(rho) < 0), rho
  assert rho[-1] < 0.05
  # O(1/σ): doubling σ roughly halves the gap once σ is large.
  np.testing.assert_allclose(rho[-1] / rho[-2], 0.5, atol=0.15)


def test_concentration_monotone_on_two_and_four_points():
  for train in (
    np.array([[-1.0, 0.0], [1.0, 0.0]]),
    np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]),
  ):
    sigmas = np.geomspace(0.05, 20.0, 12)
    c = regimes.concentration(jax.random.PRNGKey(4), train, sigmas, num_noise=2000)
    w, h, ne = (np.asarray(a) for a in (c.max_weight, c.entropy, c.n_eff))
    # Non-increasing everywhere (W = 1 exactly while fully concentrated), strictly once it moves.
    assert np.all(np.diff(w) <= 0) and np.all(np.diff(h) >= 0) and np.all(np.diff(ne) >= 0)
    moving = w[:-1] < 1 - 1e-6
    assert moving.sum() >= 7 and np.all(np.diff(w)[moving] < 0) and np.all(np.diff(h)[moving] > 0)
    assert (
      w[0] > 0.99
      and abs(w[-1] - 1 / len(train)) < 0.05
      and 1 <= ne.min()
      and ne.max() <= len(train)
    )


def test_shell_radii_mass_and_formula():
  for d, c in ((2, 5.0), (64, 5.0), (500, 3.0)):
    r_in, r_out = regimes.shell_radii(d, c)
    assert r_in == pytest.approx(np.sqrt(max(d - 2 * np.sqrt(c * d), 0)))
    assert r_out == pytest.approx(np.sqrt(d + 2 * np.sqrt(c * d) + 2 * c))
    norms = np.linalg.norm(np.random.default_rng(d).standard_normal((20000, d)), axis=1)
    assert np.mean((norms >= r_in) & (norms <= r_out)) >= 1 - 2 * np.exp(-c)


def test_cheap_sweep_equals_direct_distances():
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(5), QUERIES.shape))
  sw = regimes.shell_sweep(QUERIES, z, TRAIN)
  for s in (0.0, 0.3, 7.0):
    direct = np.sum((QUERIES[:, None] + s * z[:, None] - TRAIN[None]) ** 2, -1)
    np.testing.assert_allclose(regimes.sweep_sq_distances(sw, s), direct, rtol=1e-12, atol=1e-12)


def test_shell_coverage_matches_direct_monte_carlo():
  d = 8
  train = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (30, d)))
  held = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (25, d)))
  sigmas = np.geomspace(0.05, 3.0, 9)
  key = jax.random.PRNGKey(8)
  cov = regimes.shell_coverage(key, train, held, sigmas, num_noise=3)
  # Same noise draws (the module's convention), decisions recomputed from plain distances.
  z = np.asarray(jax.random.normal(key, (3,) + held.shape)).reshape(-1, d)
  q = np.broadcast_to(held[None], (3,) + held.shape).reshape(-1, d)
  r_in, r_out = regimes.shell_radii(d, 5.0)
  for k, s in enumerate(sigmas):
    dist = np.linalg.norm(q[:, None] + s * z[:, None] - train[None], axis=-1)
    inside = (dist >= s * r_in) & (dist <= s * r_out)
    assert cov.coverage[k] == pytest.approx(np.mean(inside.any(1)), abs=1e-12)
    assert cov.multiplicity[k] == pytest.approx(np.mean(inside.sum(1)), abs=1e-12)
  assert cov.coverage[0] < 0.2 and cov.coverage[-1] > 0.9
  # Training points as queries are covered by their own shell (mass ≥ 1 − 2e^{-5}).
  own = regimes.shell_coverage(key, train, train, np.array([0.01]), num_noise=20)
  assert own.coverage[0] >= 0.97


def test_coverage_rule_and_rough_boundaries():
  held = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (40, 3)))
  nn = np.linalg.norm(held[:, None] - TRAIN[None], axis=-1).min(1)
  sig = np.array([0.05, 0.2, 1.0])
  reach = np.sqrt(2 * np.sqrt(15.0) + 10.0)
  np.testing.assert_allclose(
    regimes.coverage_rule(nn, sig, 3), [(nn <= reach * s).mean() for s in sig]
  )
  b = regimes.rough_boundaries(TRAIN, held)
  dtt = np.sort(np.linalg.norm(TRAIN[:, None] - TRAIN[None], axis=-1), 1)[:, 1]
  assert b["delta_nn_heldout"] == pytest.approx(np.median(nn))
  assert b["sigma_cov"] == pytest.approx(np.median(nn) / 60**0.25)
  assert b["sigma_conc"] == pytest.approx(np.median(dtt) / (2 * np.sqrt(np.log(37))))


def test_regime_boundaries_from_curves():
  s = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
  b = regimes.regime_boundaries(s, [0.1, 0.5, 0.85, 0.95, 1.0], [1.0, 0.99, 0.9, 0.82, 0.3])
  assert (b["sigma_small"], b["sigma_large"], b["danger_lo"], b["danger_hi"]) == (
    0.4,
    0.8,
    0.4,
    0.8,
  )
  assert b["danger_mask"] == [False, False, True, True, False]
  b = regimes.regime_boundaries(s, [0, 0, 0, 0.5, 0.9], [0.9, 0.5, 0.2, 0.1, 0.0])
  assert b["sigma_small"] == 1.6 and b["sigma_large"] == 0.1 and np.isnan(b["danger_lo"])


def test_fm_time_mapping_with_exact_two_point_field():
  m = 1.3
  train = np.array([[-m], [m]])
  t = np.array([0.05, 0.3, 0.5, 0.8, 0.95])
  np.testing.assert_allclose(paths.fm_sigma_to_t(paths.fm_t_to_sigma(t)), t, rtol=1e-14)
  field = lambda p, x, tt: data.two_point_velocity(x, jnp.asarray(tt)[:, None], m)
  den = denoisers.fm_denoiser(field, None)
  y = np.linspace(-3, 3, 13)[:, None]
  for sigma in paths.fm_t_to_sigma(t):
    np.testing.assert_allclose(
      den(jnp.asarray(y), sigma), denoisers.empirical_denoiser(train, y, sigma), atol=1e-10
    )


GAUSS_MU = np.array([0.5, -1.0, 2.0])
GAUSS_A = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, -0.2], [0.1, 0.0, 0.6]])
GAUSS_LG = denoisers.LinearGaussian(
  jnp.asarray(GAUSS_MU), *(lambda u, s, _: (u, s))(*np.linalg.svd(GAUSS_A @ GAUSS_A.T))
)
Z = np.asarray(jax.random.normal(jax.random.PRNGKey(10), (16, 3)))


@jax.jit
def _sample_windowed(train, z, lo, hi, lam, sigmas):
  base = lambda y, s: denoisers.linear_denoiser(GAUSS_LG, y, s)
  emp = lambda y, s: denoisers.posterior(train, y, s, query_chunk=16, train_chunk=16).denoiser
  return sampling.sample_pf(denoisers.windowed(base, emp, lo, hi, lam), z, sigmas)


GRID = jnp.asarray(regimes.sigma_grid(1e-3, 40.0, 160))


def test_pf_sampler_exact_for_gaussian():
  res = _sample_windowed(jnp.asarray(TRAIN), Z, 1.0, 0.5, 0.0, GRID)  # empty window: pure D_lin
  coarse = _sample_windowed(jnp.asarray(TRAIN), Z, 1.0, 0.5, 0.0, GRID[::2])
  cov = GAUSS_A @ GAUSS_A.T
  w, u = np.linalg.eigh(cov)
  f = lambda p: (u * p) @ u.T
  s0 = 40.0
  ref = GAUSS_MU + (f(np.sqrt(w)) @ f(1 / np.sqrt(w + s0**2)) @ (s0 * Z - GAUSS_MU).T).T
  err, err_coarse = np.abs(res.x - ref).max(), np.abs(coarse.x - ref).max()
  assert err < 2e-3 and err_coarse / err > 3.5, (err, err_coarse)  # Heun: second order
  assert res.num_evals == 321 and np.all(res.local_error < 1e-2)


def test_pf_sampler_with_empirical_denoiser_memorises_and_windows_switch():
  full = _sample_windowed(jnp.asarray(TRAIN), Z, 0.0, 100.0, 1.0, GRID)  # D* everywhere
  nn = neighbours.nearest_two(full.x, TRAIN)
  np.testing.assert_allclose(nn.d1, 0.0, atol=1e-9)
  assert np.all(np.asarray(memorisation.nn_ratio(full.x, TRAIN)) < 1e-6)
  half = _sample_windowed(jnp.asarray(TRAIN), Z, 0.0, 100.0, 0.5, GRID)
  assert not np.allclose(half.x, full.x)
  den = denoisers.windowed(lambda y, s: y * 0.0, lambda y, s: y, 1.0, 2.0, 0.25)
  y = jnp.ones((2, 3))
  np.testing.assert_allclose(den(y, 1.5), 0.25 * y)
  np.testing.assert_allclose(den(y, 3.0), 0.0 * y)


def test_denoiser_profile_limits():
  sigmas = np.array([0.3, 1.0, 3.0])
  key = jax.random.PRNGKey(11)
  emp = lambda y, s: denoisers.empirical_denoiser(TRAIN, y, s)
  lg = denoisers.fit_linear_gaussian(TRAIN)
  lin = lambda y, s: denoisers.linear_denoiser(lg, y, s)
  p_emp = regimes.denoiser_profile(key, emp, TRAIN, sigmas)
  p_lin = regimes.denoiser_profile(key, lin, TRAIN, sigmas)
  np.testing.assert_allclose(p_emp.rel_dist, 0.0, atol=1e-12)
  np.testing.assert_allclose(p_emp.alignment, 1.0, atol=1e-12)
  np.testing.assert_allclose(p_lin.rel_dist, 1.0, atol=1e-12)
  np.testing.assert_allclose(p_lin.alignment, 0.0, atol=1e-12)
  mid = regimes.denoiser_profile(key, lambda y, s: 0.5 * emp(y, s) + 0.5 * lin(y, s), TRAIN, sigmas)
  np.testing.assert_allclose(mid.alignment, 0.5, atol=1e-12)


def test_energy_distance_against_bruteforce():
  x, y = TRAIN[:20], QUERIES
  pd = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()
  ref = 2 * pd(x, y) - pd(x, x) - pd(y, y)
  assert float(metrics.energy_distance(x, y)) == pytest.approx(ref, rel=1e-6)
  assert abs(float(metrics.energy_distance(x, x))) < 1e-6 and ref > 0


def test_sigma_grid_and_windows():
  g = regimes.sigma_grid(0.01, 10.0, 6)
  assert g[0] == pytest.approx(10.0) and g[-1] == pytest.approx(0.01) and np.all(np.diff(g) < 0)
  w = regimes.log_windows(0.01, 10.0, 3)
  np.testing.assert_allclose(w, [[0.01, 0.1], [0.1, 1.0], [1.0, 10.0]], rtol=1e-12)


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: denoisers.posterior(TRAIN, QUERIES[:, :2], 1.0), "`y`"),
    (lambda: denoisers.posterior(TRAIN[0], QUERIES, 1.0), "`train`"),
    (lambda: denoisers.posterior(TRAIN, QUERIES, -1.0), "`sigma`"),
    (lambda: denoisers.posterior(TRAIN, QUERIES, np.ones(3)), "`sigma`"),
    (lambda: denoisers.posterior(TRAIN, QUERIES * np.nan, 1.0), "`y`"),
    (lambda: denoisers.posterior(TRAIN, QUERIES, 1.0, train_chunk=0), "`train_chunk`"),
    (lambda: regimes.shell_radii(0), "`d`"),
    (lambda: regimes.shell_radii(3, c=-1.0), "`c`"),
    (lambda: regimes.shell_sweep(QUERIES, QUERIES[:3], TRAIN), "`z`"),
    (lambda: regimes.concentration(KEY, TRAIN, [0.1, -1.0]), "`sigmas`"),
    (lambda: regimes.regime_boundaries([0.2, 0.1], [1, 1], [1, 1]), "increasing"),
    (lambda: regimes.regime_boundaries([0.1, 0.2], [1], [1, 1]), "share one shape"),
    (lambda: regimes.sigma_grid(1.0, 0.5, 3), "sigma_min"),
    (lambda: sampling.sample_pf(lambda y, s: y, Z, [0.1, 1.0]), "decreasing"),
    (lambda: sampling.sample_pf(lambda y, s: y, Z[0], [1.0, 0.1]), "`z`"),
    (lambda: regimes.rough_boundaries(TRAIN[:2], QUERIES), "at least 3"),
    (lambda: metrics.energy_distance(TRAIN, QUERIES[:, :2]), "`y`"),
  ],
)
def test_validation_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()
