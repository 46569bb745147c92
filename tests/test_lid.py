"""LID estimators against closed forms and scikit-dimension (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import data, lid, linalg, neighbours, nets, paths, training

D = 6
EIGS = np.array([4.0, 2.0, 1.0, 0.05, 1e-3, 1e-4])


def _gaussian():
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(D, D)))
  mu = rng.normal(size=D)
  x = mu[None] + (rng.normal(size=(5, D)) * np.sqrt(EIGS)[None]) @ u.T  # points drawn from N(μ, Σ)
  return jnp.asarray(u), jnp.asarray(mu), jnp.asarray(x)


U, MU, X = _gaussian()
SIGMA = U @ jnp.diag(jnp.asarray(EIGS)) @ U.T

# Independent closed forms (ψ, σ, ψ', σ') of each schedule, written out by hand.
B0, B1 = 0.1, 20.0
_vp_b = lambda t: B0 * t + 0.5 * (B1 - B0) * t**2
_vp_psi = lambda t: jnp.exp(-0.5 * _vp_b(t))
COEFFS = {
  "linear_fm": lambda t: (t, 1.0 - t, jnp.ones_like(t), -jnp.ones_like(t)),
  "vp_linear": lambda t: (
    _vp_psi(t),
    jnp.sqrt(1 - _vp_psi(t) ** 2),
    -0.5 * (B0 + (B1 - B0) * t) * _vp_psi(t),
    0.5 * (B0 + (B1 - B0) * t) * _vp_psi(t) ** 2 / jnp.sqrt(1 - _vp_psi(t) ** 2),
  ),
  "ve": lambda t: (
    jnp.ones_like(t),
    0.01 * 5000.0**t,
    jnp.zeros_like(t),
    0.01 * 5000.0**t * np.log(5000.0),
  ),
  "edm": lambda t: (jnp.ones_like(t), t, jnp.zeros_like(t), jnp.ones_like(t)),
}
T0 = {"linear_fm": 0.9, "vp_linear": 0.05, "ve": 0.3, "edm": 0.1}


def gaussian_field(name, parameterisation):
  """Exact field of p_t = N(ψμ, ψ²Σ + σ²I): score −C⁻¹r, ε = σC⁻¹r, x̂ = μ + ψΣC⁻¹r, u = ψ'x̂ +
  σ'ε.
  """

  def one(y, t):
    psi, sig, dpsi, dsig = COEFFS[name](t)
    a = jnp.linalg.solve(psi**2 * SIGMA + sig**2 * jnp.eye(D), y - psi * MU)
    x0 = MU + psi * SIGMA @ a
    return {"score": -a, "eps": sig * a, "x0": x0, "velocity": dpsi * x0 + dsig * sig * a}[
      parameterisation
    ]

  return jax.vmap(one)


def closed_form(name, t0, x):
  psi, sig, _, _ = COEFFS[name](jnp.asarray(t0))
  s2 = (sig / psi) ** 2
  z = (x - MU[None]) @ U
  lam = jnp.asarray(EIGS)
  return jnp.sum(lam[None] / (lam[None] + s2) + s2 * z**2 / (lam[None] + s2) ** 2, axis=1)


@pytest.mark.parametrize("name", sorted(COEFFS))
@pytest.mark.parametrize("param", ["eps", "score", "x0", "velocity"])
def test_flipd_gaussian_closed_form(name, param):
  sched = paths.get_schedule(name)
  got = lid.flipd(
    gaussian_field(name, param), X, T0[name], sched, parameterisation=param, chunk_size=4
  )
  want = closed_form(name, T0[name], X)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(jnp.max(want)) > 2.5 and float(jnp.min(want)) < 4.5  # a soft count, neither 0 nor D


def test_flipd_fm_near_data_end_and_batching():
  # Linear FM at t0 = 0.995 (σ = 0.005): the ε form stays accurate; batch_size gives the same
  # values.
  f = gaussian_field("linear_fm", "velocity")
  sched = paths.linear_fm()
  got = lid.flipd(f, X, 0.995, sched, parameterisation="velocity", batch_size=2)
  np.testing.assert_allclose(got, closed_form("linear_fm", 0.995, X), rtol=1e-6)
  np.testing.assert_allclose(
    got, lid.flipd(f, X, 0.995, sched, parameterisation="velocity"), rtol=1e-12
  )


def test_exact_trace_matches_jacobian_of_mlp():
  module = nets.MLPField(dim=7, hidden=(16, 16))
  params = nets.init_params(module, jax.random.PRNGKey(0), 7, jnp.float64)
  f = lambda y: module.apply(params, y[None], jnp.full((1,), 0.3))[0]
  y = jax.random.normal(jax.random.PRNGKey(1), (7,), jnp.float64)
  out, tr = linalg.exact_trace(f, y, chunk_size=3)  # 7 = 3 + 3 + 1 (padded chunk)
  np.testing.assert_allclose(tr, jnp.trace(jax.jacfwd(f)(y)), rtol=1e-10)
  np.testing.assert_allclose(out, f(y), rtol=1e-12)


@pytest.mark.parametrize("sampler", ["normal", "signs"])
def test_hutchinson_within_standard_errors(sampler):
  sched = paths.vp_linear()
  f = gaussian_field("vp_linear", "eps")
  exact = lid.flipd_details(f, X, 0.05, sched, parameterisation="eps")
  est = lid.flipd_details(
    f,
    X,
    0.05,
    sched,
    parameterisation="eps",
    key=jax.random.PRNGKey(3),
    n_probes=64,
    sampler=sampler,
  )
  assert np.all(exact.sem == 0) and np.all(est.sem > 0)
  np.testing.assert_allclose(est.sq_norm, exact.sq_norm, rtol=1e-12)
  assert np.all(np.abs(est.lid - exact.lid) < 4 * est.sem), (est.lid, exact.lid, est.sem)
  one = lid.flipd_details(
    f, X, 0.05, sched, parameterisation="eps", key=jax.random.PRNGKey(3), n_probes=1
  )
  assert np.all(np.isfinite(one.lid)) and np.all(np.isinf(one.sem))


def test_flipd_curve_and_auto_t0_on_gaussian():
  sched = paths.vp_linear()
  t0s = jnp.linspace(0.01, 0.6, 12)
  curves = lid.flipd_curve(gaussian_field("vp_linear", "score"), X, t0s, sched)
  assert curves.shape == (12, 5)
  for i in (0, 7):
    np.testing.assert_allclose(curves[i], closed_form("vp_linear", t0s[i], X), rtol=1e-6)
  t0, i = lid.auto_t0(t0s, curves, sched, curve="concave")
  assert t0 == t0s[i] and 0 < int(i) < 11
  # A learned-field-like curve in log σ: ≈ D at tiny noise, a plateau at 3 from index 4 on, then a
  # slow fall.
  sig = np.asarray(sched.sigma(t0s))
  fake = np.where(
    np.arange(12) < 4, 3.0 + 7.0 * (4 - np.arange(12)) / 4, 3.0 - 0.05 * (np.arange(12) - 4)
  )
  _, i_fake = lid.auto_t0(t0s, jnp.asarray(fake)[:, None], sched)
  assert int(i_fake) == 4, (i_fake, sig)


def test_knee_index_known_knee():
  x = jnp.linspace(0.0, 1.0, 21)
  a = x[7]
  plateau_drop = jnp.where(x < a, 1.0, (1.0 - x) / (1.0 - a))  # concave decreasing, knee at 7
  rise_plateau = jnp.minimum(x / a, 1.0)  # concave increasing
  drop_floor = jnp.maximum(1.0 - x / a, 0.0)  # convex decreasing
  floor_rise = jnp.maximum((x - a) / (1.0 - a), 0.0)  # convex increasing
  assert int(lid.knee_index(x, 3.0 + 2.0 * plateau_drop)) == 7
  assert int(lid.knee_index(x, rise_plateau, "concave", "increasing")) == 7
  assert int(lid.knee_index(x, drop_floor, "convex", "decreasing")) == 7
  assert int(lid.knee_index(x, floor_rise, "convex", "increasing")) == 7
  # A smooth curve: y = 1 − exp(−10x) has its Kneedle knee where d/dx (y_n − x_n) = 0, i.e. x ≈
  # ln(10)/10.
  xs = jnp.linspace(0.0, 1.0, 1001)
  k = int(lid.knee_index(xs, 1.0 - jnp.exp(-10.0 * xs), "concave", "increasing"))
  ys = 1.0 - np.exp(-10.0)
  assert abs(float(xs[k]) - np.log(10.0 * ys) / 10.0) < 2e-3


def test_normal_bundle_recovers_large_variance_directions():
  d, big = 8, 3
  rng = np.random.default_rng(1)
  u, _ = np.linalg.qr(rng.normal(size=(d, d)))
  lam = np.array([1.0] * big + [1e-6] * (d - big))
  cov, mu = jnp.asarray(u @ np.diag(lam) @ u.T), jnp.asarray(rng.normal(size=d))
  x = jnp.asarray(mu[None] + (rng.normal(size=(4, d)) * np.sqrt(lam)[None]) @ u.T)
  sched = paths.vp_linear()

  def score(y, t):
    psi, sig, _, _ = COEFFS["vp_linear"](t[:, None, None])
    c = psi**2 * cov[None] + sig**2 * jnp.eye(d)[None]
    return -jnp.linalg.solve(c, (y - psi[:, :, 0] * mu[None])[..., None])[..., 0]

  for centre in (False, True):
    nb = lid.normal_bundle(score, x, 0.01, sched, jax.random.PRNGKey(0), centre=centre)
    assert nb.singular_values.shape == (4, d)
    assert np.all(np.diff(nb.singular_values, axis=1) <= 1e-9)
    np.testing.assert_array_equal(nb.lid, big)
    np.testing.assert_array_equal(nb.normal_dim, d - big)
  # ε-parameterised field gives the same singular values (score = −ε/σ, converted inside).
  sig = COEFFS["vp_linear"](jnp.asarray(0.01))[1]
  nb_eps = lid.normal_bundle(
    lambda y, t: -sig * score(y, t), x, 0.01, sched, jax.random.PRNGKey(0), parameterisation="eps"
  )
  nb_score = lid.normal_bundle(score, x, 0.01, sched, jax.random.PRNGKey(0))
  np.testing.assert_allclose(nb_eps.singular_values, nb_score.singular_values, rtol=1e-8)


def test_gap_dimension_variants():
  sv = jnp.asarray([[100.0, 10.0, 9.0, 8.5, 0.1], [10.0, 9.5, 9.0, 0.2, 0.1]])
  np.testing.assert_array_equal(lid.gap_dimension(sv), [1, 3])
  np.testing.assert_array_equal(lid.gap_dimension(sv, skip_first_gap=True), [4, 3])


MIX = data.manifold_mixture(
  jax.random.PRNGKey(0),
  dims=(2, 4, 8),
  kinds=("sphere", "affine", "affine"),
  ambient_dim=10,
  dtype=jnp.float64,
)
MX, MC, MLID = data.sample_manifold_mixture(jax.random.PRNGKey(1), MIX, 3000)


def test_manifold_mixture_points_lie_on_their_manifolds():
  for k, (kind, frame) in enumerate(zip(MIX.kinds, MIX.frames)):
    v = MX[MC == k] - MIX.centres[k][None]
    np.testing.assert_allclose(
      v - (v @ frame) @ frame.T, 0.0, atol=1e-10
    )  # inside the span of the frame
    if kind == "sphere":
      np.testing.assert_allclose(jnp.linalg.norm(v, axis=1), MIX.scale, rtol=1e-10)
    else:
      assert float(jnp.max(jnp.abs(v @ frame))) <= MIX.scale
  np.testing.assert_array_equal(MLID, jnp.asarray(MIX.dims)[MC])


def test_lpca_recovers_component_dimensions():
  est = lid.lpca(MX, k=30)
  est_ev = lid.lpca(MX, k=30, explained_variance=0.99)
  for k, d in enumerate(MIX.dims):
    assert np.mean(np.asarray(est[MC == k]) == d) > 0.95, (d, np.bincount(np.asarray(est[MC == k])))
    assert abs(float(np.median(np.asarray(est_ev[MC == k]))) - d) <= 1
  # Queries take the LID* of their nearest training point.
  q = MX[:20] + 1e-3
  np.testing.assert_array_equal(lid.lpca(MX, k=30, queries=q), est[:20])


def test_lpca_duplicated_atom_has_lid_zero():
  vm = data.von_mises_atom(jax.random.PRNGKey(0), n_circle=400, copies=25, dtype=jnp.float64)
  est = lid.lpca(vm.x, k=20)
  np.testing.assert_array_equal(est[vm.is_atom], 0)
  assert np.mean(np.asarray(est[~vm.is_atom]) == 1) > 0.9


def test_knn_matches_brute_force():
  rng = np.random.default_rng(2)
  q, r = rng.normal(size=(37, 5)), rng.normal(size=(53, 5))
  d, i = neighbours.knn(jnp.asarray(q), jnp.asarray(r), 4, query_chunk=8)
  full = np.linalg.norm(q[:, None] - r[None], axis=-1)
  np.testing.assert_array_equal(i, np.argsort(full, axis=1)[:, :4])
  np.testing.assert_allclose(d, np.sort(full, axis=1)[:, :4], rtol=1e-12)
  d_self, i_self = neighbours.knn(
    jnp.asarray(r), jnp.asarray(r), 3, exclude_self=True, query_chunk=16
  )
  assert not np.any(np.asarray(i_self) == np.arange(53)[:, None])
  full_r = np.linalg.norm(r[:, None] - r[None], axis=-1) + np.diag(np.full(53, np.inf))
  np.testing.assert_allclose(d_self, np.sort(full_r, axis=1)[:, :3], rtol=1e-12)


def test_mle_and_twonn_match_scikit_dimension():
  skdim = pytest.importorskip("skdim")
  x = np.asarray(MX[MC == 1])  # the flat 4-dim piece, ~1000 points
  glob, pw = lid.mle(jnp.asarray(x), k=20)
  ref = skdim.id.MLE().fit(x, n_neighbors=20)
  # Same estimator, same neighbours, float64: only rounding differs (no ties in continuous data).
  np.testing.assert_allclose(pw, ref.dimension_pw_, rtol=1e-8)
  np.testing.assert_allclose(glob, ref.dimension_, rtol=1e-8)
  mean_glob, _ = lid.mle(jnp.asarray(x), k=20, aggregate="mean")
  np.testing.assert_allclose(mean_glob, np.mean(ref.dimension_pw_), rtol=1e-8)
  for method in ("linear", "mle"):
    ours = lid.twonn(jnp.asarray(x), method=method)
    np.testing.assert_allclose(ours, skdim.id.TwoNN(method=method).fit(x).dimension_, rtol=1e-8)
    assert abs(float(ours) - 4) < 1.0  # ~1000 points in a 4-cube: boundary effects bias TwoNN low
  assert abs(float(glob) - 4) < 0.6


def test_twonn_drops_duplicates_like_scikit_dimension():
  skdim = pytest.importorskip("skdim")
  x = np.asarray(MX[MC == 0])
  x = np.concatenate([x, x[:10]])  # 20 points with zero nearest-neighbour distance
  with pytest.warns(UserWarning):
    ref = skdim.id.TwoNN().fit(x).dimension_
  np.testing.assert_allclose(lid.twonn(jnp.asarray(x)), ref, rtol=1e-8)


def test_mmh_labels():
  lid_model = jnp.asarray([0.1, 0.2, 1.0, 0.1, 3.0, 0.0])
  lid_star = jnp.asarray([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
  mem = jnp.asarray([True, True, True, False, True, True])
  labels = lid.mmh_labels(lid_model, lid_star, mem)
  np.testing.assert_array_equal(
    labels, [lid.OD_MEM, lid.DD_MEM, lid.OTHER_MEM, lid.NOT_MEMORISED, lid.OTHER_MEM, lid.DD_MEM]
  )
  assert lid.mmh_counts(labels) == {"not_memorised": 1, "od_mem": 1, "dd_mem": 2, "other_mem": 2}


def test_denoising_loss_equals_fm_loss_for_linear_fm():
  module = nets.MLPField(dim=3, hidden=(8,))
  apply_fn = nets.velocity_fn(module)
  params = nets.init_params(module, jax.random.PRNGKey(0), 3, jnp.float64)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  x, eps = jax.random.normal(k1, (16, 3), jnp.float64), jax.random.normal(k2, (16, 3), jnp.float64)
  t = jax.random.uniform(k3, (16,), jnp.float64)
  np.testing.assert_allclose(
    training.denoising_loss(apply_fn, params, paths.linear_fm(), x, eps, t, "velocity"),
    training.fm_loss(apply_fn, params, x, eps, t),
    rtol=1e-12,
  )


@pytest.mark.parametrize("name", sorted(COEFFS))
def test_denoising_targets_are_the_conditional_quantities(name):
  sched = paths.get_schedule(name)
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  x, eps = jax.random.normal(k1, (4, 3), jnp.float64), jax.random.normal(k2, (4, 3), jnp.float64)
  t = jnp.full((4,), T0[name], jnp.float64)
  psi, sig, dpsi, dsig = (c[:, None] for c in COEFFS[name](t))
  tgt = functools.partial(training.denoising_target, sched, x, eps, t)
  np.testing.assert_allclose(tgt("velocity"), dpsi * x + dsig * eps, rtol=1e-10)
  np.testing.assert_allclose(tgt("score"), -eps / sig, rtol=1e-12)
  np.testing.assert_allclose(tgt("x0"), x)
  loss = training.denoising_objective(lambda p, y, s: p * y, sched, x, batch_size=8)(
    1.0, jax.random.PRNGKey(0)
  )
  assert np.isfinite(float(loss))


def test_edm_schedule_and_karras_sigmas():
  s = paths.get_schedule("edm")
  np.testing.assert_allclose(
    [s.psi(0.7), s.sigma(0.7), s.dpsi(0.7), s.dsigma(0.7)], [1.0, 0.7, 0.0, 1.0]
  )
  sig = paths.karras_sigmas(10)
  np.testing.assert_allclose([sig[0], sig[-1]], [80.0, 0.002], rtol=1e-10)
  assert np.all(np.diff(sig) < 0)
  times = training.sample_times(jax.random.PRNGKey(0), s, 2000, dtype=jnp.float64)
  np.testing.assert_allclose(np.mean(np.log(times)), -1.2, atol=0.1)


def test_validation_errors():
  f = gaussian_field("vp_linear", "score")
  sched = paths.vp_linear()
  with pytest.raises(ValueError, match="`x`"):
    lid.flipd(f, X[0], 0.05, sched)
  with pytest.raises(ValueError, match="`key`"):
    lid.flipd(f, X, 0.05, sched, n_probes=4)
  with pytest.raises(ValueError, match="`n_probes`"):
    lid.flipd(f, X, 0.05, sched, n_probes=0, key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="`parameterisation`"):
    lid.flipd(f, X, 0.05, sched, parameterisation="noise")
  with pytest.raises(ValueError, match="`t0`"):
    lid.flipd(f, X, 1.0, paths.linear_fm())
  with pytest.raises(ValueError, match="`x`"):
    lid.flipd(f, X.at[0, 0].set(jnp.nan), 0.05, sched)
  with pytest.raises(ValueError, match="`schedule`"):
    lid.flipd(f, X, 0.05, "vp")
  with pytest.raises(ValueError, match="`k`"):
    neighbours.knn(X, X, 5, exclude_self=True)
  with pytest.raises(ValueError, match="`explained_variance`"):
    lid.lpca(X, k=3, explained_variance=1.5)
  with pytest.raises(ValueError, match="`curve`"):
    lid.knee_index(jnp.arange(4.0), jnp.arange(4.0), curve="wiggly")
  with pytest.raises(ValueError, match="`lid_star`"):
    lid.mmh_labels(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3, bool))
  with pytest.raises(ValueError, match="`method`"):
    lid.twonn(X, method="fit")
  with pytest.raises(ValueError, match="`kinds`"):
    data.manifold_mixture(jax.random.PRNGKey(0), dims=(2,), kinds=("torus",))
  with pytest.raises(ValueError, match="`parameterisation`"):
    training.denoising_objective(lambda p, y, t: y, sched, X, parameterisation="v")
