"""Laplace evidence (prior precision), the linearised sampler and pathological curvature (float64).

Every quantity is checked against an independent dense computation: ``jax.hessian`` +
``slogdet`` for the evidence, ``scipy.optimize`` for its maximiser, the dense Jacobian for the
Gauss–Newton Hessian of the linearised loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from memjax import curvature, laplace, linalg, nets

P, K = 6, 3
A_ROWS = jax.random.normal(jax.random.PRNGKey(0), (K, P), jnp.float64)
C_OFF = jnp.asarray([0.3, -0.2, 0.5])
THETA = 0.7 * jax.random.normal(jax.random.PRNGKey(1), (P,), jnp.float64)


def data_loss_rank_k(theta):
  """``Σ_j 3 softplus(a_jᵀθ + c_j)``: a data term whose Hessian has rank K exactly."""
  return 3.0 * jnp.sum(jax.nn.softplus(A_ROWS @ theta + C_OFF))


def dense_log_evidence(data_loss, theta, alpha):
  h = jax.hessian(data_loss)(theta)
  _, logdet = jnp.linalg.slogdet(h + alpha * jnp.eye(theta.shape[0]))
  p = theta.shape[0]
  return (
    -data_loss(theta) - 0.5 * alpha * jnp.sum(theta**2) + 0.5 * p * jnp.log(alpha) - 0.5 * logdet
  )


def top_values(data_loss, theta, k):
  return jnp.linalg.eigvalsh(jax.hessian(data_loss)(theta))[::-1][:k]


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 1.0, 7.5, 300.0])
def test_log_evidence_low_rank_equals_dense_for_a_rank_k_data_term(alpha):
  values = top_values(data_loss_rank_k, THETA, K)
  got = laplace.log_evidence(values, THETA, alpha, data_loss=data_loss_rank_k(THETA))
  want = dense_log_evidence(data_loss_rank_k, THETA, alpha)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-12, atol=1e-10)


def test_log_evidence_with_all_p_eigenvalues_equals_dense_for_a_full_rank_hessian():
  def loss(th):
    return jnp.sum(jnp.cosh(A_ROWS.T @ A_ROWS @ th * 0.3)) + 0.1 * jnp.sum(th**4)

  values = top_values(loss, THETA, P)
  alphas = jnp.asarray([0.05, 2.0, 40.0])
  got = laplace.log_evidence(values, THETA, alphas, data_loss=loss(THETA))
  want = jnp.stack([dense_log_evidence(loss, THETA, a) for a in alphas])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)


def test_optimise_prior_maximises_the_dense_evidence():
  values = top_values(data_loss_rank_k, THETA, K)
  res = laplace.optimise_prior(values, THETA, data_loss=data_loss_rank_k(THETA))
  neg = lambda log_a: -float(dense_log_evidence(data_loss_rank_k, THETA, np.exp(log_a)))
  ref = scipy.optimize.minimize_scalar(
    neg, bounds=(-15, 15), method="bounded", options={"xatol": 1e-12}
  )
  np.testing.assert_allclose(float(res.alpha), np.exp(ref.x), rtol=1e-6)
  np.testing.assert_allclose(float(res.log_evidence), -ref.fun, rtol=1e-10)
  # MacKay's fixed point: α ||θ||² = γ = Σ λ/(λ+α).
  gamma = float(jnp.sum(values / (values + res.alpha)))
  np.testing.assert_allclose(float(res.alpha * jnp.sum(THETA**2)), gamma, rtol=1e-10)
  np.testing.assert_allclose(float(res.effective_params), gamma, rtol=1e-12)
  assert int(res.num_negative) == 0


def test_optimise_prior_refuses_a_flat_data_term_and_a_zero_map():
  with pytest.raises(ValueError, match="no positive curvature"):
    laplace.optimise_prior(jnp.asarray([0.0, -1e-3, 0.0]), THETA)
  with pytest.raises(ValueError, match="alpha -> inf"):
    laplace.optimise_prior(jnp.asarray([3.0, 1.0]), jnp.zeros(P))
  with pytest.raises(ValueError, match="`bounds`"):
    laplace.optimise_prior(jnp.asarray([3.0, 1.0]), THETA, bounds=(1.0, 0.5))
  with pytest.raises(ValueError, match="`values`"):
    laplace.optimise_prior(jnp.asarray([jnp.nan, 1.0]), THETA)
  with pytest.raises(ValueError, match="`alpha`"):
    laplace.log_evidence(jnp.asarray([3.0]), THETA, -1.0)


# --- A small MLP flow-matching fit (float64).


def _mlp_fit(alpha=1.0, k=4, **kw):
  mod = nets.MLPField(dim=2, hidden=(6,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, jax.random.PRNGKey(3), 2, jnp.float64)
  data = jax.random.normal(jax.random.PRNGKey(4), (10, 2), jnp.float64)
  lfit = laplace.fit(
    u,
    params,
    data,
    jax.random.PRNGKey(5),
    k=k,
    alpha=alpha,
    num_triples=10,
    loss_scale=0.5,
    select="dense_0",
    num_iters=None,
    **kw,
  )
  return u, params, lfit


def test_fit_optimise_prior_and_with_prior_on_a_network():
  _, _, lfit = _mlp_fit(alpha=1.0)
  res = laplace.optimise_prior(lfit.eig.values, lfit.theta_map)
  new = laplace.with_prior(lfit, res.alpha)
  th = lfit.theta_map + 0.1
  h_old = jax.hessian(lfit.loss_fn)(th)
  h_new = jax.hessian(new.loss_fn)(th)
  delta = float(res.alpha) - 1.0
  np.testing.assert_allclose(h_new, h_old + delta * np.eye(th.shape[0]), atol=1e-9)
  np.testing.assert_allclose(float(new.alpha), float(res.alpha))
  np.testing.assert_allclose(
    float(new.min_eigenvalue), float(lfit.min_eigenvalue) + delta, atol=1e-9
  )
  # The data-term eigenpairs do not move; the evidence at α̂ beats α = 1 and α = 100.
  np.testing.assert_array_equal(np.asarray(new.eig.values), np.asarray(lfit.eig.values))
  ev = lambda a: float(laplace.log_evidence(lfit.eig.values, lfit.theta_map, a))
  assert ev(float(res.alpha)) >= max(ev(1.0), ev(100.0))


def test_fit_reports_the_smallest_hessian_eigenvalue():
  _, _, lfit = _mlp_fit()
  dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lfit.loss_fn)(lfit.theta_map)))
  np.testing.assert_allclose(float(lfit.min_eigenvalue), dense[0], rtol=1e-6, atol=1e-8)


def test_linearised_loss_is_the_gauss_newton_quadratic():
  u, params, lfit = _mlp_fit(alpha=0.3)
  res_fn = curvature.curvature_residual_fn(u, params, *lfit.triples, subset=lfit.subset)
  th0 = lfit.theta_map
  jac = jax.jacfwd(lambda th: res_fn(th).reshape(-1))(th0)  # (B·D, P) dense
  ggn = 2 * 0.5 * jac.T @ jac + 0.3 * np.eye(th0.shape[0])
  th = th0 + 0.2 * jax.random.normal(jax.random.PRNGKey(8), th0.shape, jnp.float64)
  np.testing.assert_allclose(jax.hessian(lfit.linearised_loss_fn)(th), ggn, rtol=1e-9, atol=1e-10)
  # Value and gradient equal the true loss's at θ*.
  np.testing.assert_allclose(lfit.linearised_loss_fn(th0), lfit.loss_fn(th0), rtol=1e-12)
  np.testing.assert_allclose(
    jax.grad(lfit.linearised_loss_fn)(th0), jax.grad(lfit.loss_fn)(th0), rtol=1e-10, atol=1e-12
  )
  # Off θ* the true loss is not quadratic: the two differ (the test can fail).
  assert abs(float(lfit.linearised_loss_fn(th0 + 2.0) - lfit.loss_fn(th0 + 2.0))) > 1e-3
  # ... and its value there is the closed-form quadratic.
  d = th - th0
  r = res_fn(th0).reshape(-1) + jac @ d
  np.testing.assert_allclose(lfit.linearised_loss_fn(th), 0.5 * r @ r + 0.15 * th @ th, rtol=1e-12)


def _linear_in_params(params, x, t):
  return params["w"][None, :] * x + params["b"][None, :] * t[:, None]


def test_linearised_sampler_equals_riemannian_for_a_model_linear_in_its_weights():
  params = {"w": jnp.asarray([0.4, -0.2]), "b": jnp.asarray([0.1, 0.3])}
  data = jax.random.normal(jax.random.PRNGKey(9), (8, 2), jnp.float64)
  lfit = laplace.fit(
    _linear_in_params,
    params,
    data,
    jax.random.PRNGKey(2),
    k=4,
    alpha=1.0,
    num_triples=8,
    loss_scale=1.0,
    num_iters=4,
  )
  lfit = laplace.tilt(lfit)
  v, out = laplace.posterior_samples(
    lfit,
    3.0,
    jax.random.PRNGKey(1),
    3,
    samplers=("riemannian", "linearised"),
    options={
      "riemannian": {"rtol": 1e-9, "atol": 1e-11},
      "linearised": {"rtol": 1e-9, "atol": 1e-11},
    },
  )
  np.testing.assert_allclose(out["linearised"].theta, out["riemannian"].theta, rtol=1e-7, atol=1e-9)
  assert bool(jnp.all(out["linearised"].success))
  # The correction is not zero (the geodesic bends): a non-trivial equality.
  assert float(jnp.max(jnp.abs(out["riemannian"].theta - (lfit.theta_map[None, :] + v)))) > 1e-4


def test_tilt_makes_both_losses_stationary():
  _, _, lfit = _mlp_fit()
  assert float(lfit.grad_norm) > 1e-3
  t = laplace.tilt(lfit)
  assert float(t.grad_norm) < 1e-10
  assert float(jnp.linalg.norm(jax.grad(t.linearised_loss_fn)(t.theta_map))) < 1e-10


def test_tilt_is_idempotent_and_with_prior_keeps_a_tilted_fit_stationary():
  _, _, lfit = _mlp_fit()
  t = laplace.tilt(lfit)
  tt = laplace.tilt(t)
  np.testing.assert_allclose(tt.loss.tilt_grad, t.loss.tilt_grad, rtol=1e-12)
  # A new prior after the tilt re-tilts (the gradient of the new prior term at θ* is α'θ*).
  p = laplace.with_prior(t, 3.0 * float(lfit.alpha))
  assert float(p.grad_norm) < 1e-10
  assert float(jnp.linalg.norm(jax.grad(p.loss_fn)(p.theta_map))) < 1e-10
  # The tilted loss is L(θ) − g₀ᵀ(θ − θ*) with g₀ the untilted gradient at θ* (dense check).
  th = p.theta_map + 0.01
  untilted = laplace.with_prior(lfit, 3.0 * float(lfit.alpha))
  g0 = jax.grad(untilted.loss_fn)(p.theta_map)
  expect = untilted.loss_fn(th) - jnp.dot(g0, th - p.theta_map)
  np.testing.assert_allclose(p.loss_fn(th), expect, rtol=1e-12)


# --- Pathological curvature: each failure detected and reported, never returned as a sample.


def _bilinear(params, x, t):
  del t
  return params["a"] * params["b"] * x


def test_saddle_at_theta_star_is_detected_and_refused():
  # u = a b x at a = b = 0: ∇L = 0, ∇²L = [[α, c], [c, α]] with c = −2s Σ x_t·target ≠ 0.
  params = {"a": jnp.asarray(0.0), "b": jnp.asarray(0.0)}
  data = jnp.asarray([[1.5], [2.0], [1.0]])
  lfit = laplace.fit(
    _bilinear,
    params,
    data,
    jax.random.PRNGKey(0),
    k=1,
    alpha=0.01,
    num_triples=3,
    loss_scale=1.0,
    num_iters=2,
  )
  dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lfit.loss_fn)(lfit.theta_map)))
  assert dense[0] < -0.1  # a genuine saddle
  np.testing.assert_allclose(float(lfit.min_eigenvalue), dense[0], rtol=1e-8)
  with pytest.raises(ValueError, match="saddle"):
    laplace.check_minimum(lfit)
  with pytest.raises(ValueError, match="saddle"):
    laplace.posterior_samples(
      lfit, 1.0, jax.random.PRNGKey(1), 2, samplers=("euclidean",), mode="full"
    )
  # Explicitly overridden, the clipped Gaussian is sampled.
  v, _ = laplace.posterior_samples(
    lfit, 1.0, jax.random.PRNGKey(1), 2, samplers=("euclidean",), mode="full", check=False
  )
  assert v.shape == (2, 2)
  # The subspace posterior lives on the top-k span, where the curvature is positive: defined.
  top = np.linalg.eigh(np.asarray(jax.hessian(lfit.loss_fn)(lfit.theta_map)))[1][:, -1]
  v, _ = laplace.posterior_samples(lfit, 1.0, jax.random.PRNGKey(1), 2, samplers=("euclidean",))
  np.testing.assert_allclose(np.abs(np.asarray(v) @ top), np.linalg.norm(v, axis=-1), rtol=1e-8)
  # A minimum passes (same model, data where the product is positive-definite after α).
  ok = laplace.with_prior(lfit, 10.0)
  laplace.check_minimum(ok)


def _fit_for(loss_fn, theta, k=None):
  """A LaplaceFit around a hand-written loss (dense eigenpairs of its data term)."""
  h = jax.hessian(loss_fn)(theta)
  w, q = jnp.linalg.eigh(h)
  k = k or theta.shape[0]
  eig = linalg.Eigenpairs(w[::-1][:k] - 1.0, q[:, ::-1][:, :k].T, jnp.zeros(k))
  g = jnp.linalg.norm(jax.grad(loss_fn)(theta))
  objective = laplace.as_loss(loss_fn)
  return laplace.LaplaceFit(
    None, None, objective, None, theta, eig, jnp.asarray(1.0), g, g, None, jnp.min(w)
  )


def test_flat_valley_geodesics_are_straight_and_the_flat_evidence_is_refused():
  # L(θ) = ½ θ₀² (1 + θ₀²) + ½||θ||²: flat data term along θ₁, θ₂ (only the prior curves them).
  def loss(th):
    return 0.5 * th[0] ** 2 * (1 + th[0] ** 2) + 0.5 * jnp.sum(th**2)

  lfit = _fit_for(loss, jnp.zeros(3))
  v = jnp.asarray([[0.0, 2.0, -1.0], [0.0, -0.5, 3.0]])  # along the valley floor
  out = laplace.riemannian_sampler(lfit, v, rtol=1e-9, atol=1e-11)
  assert bool(jnp.all(out.success))
  # On the data term alone (no prior) the valley floor has g = 0: the geodesic is the straight
  # line, a valid sample equal to the Euclidean one.
  data_only = _fit_for(lambda th: 0.5 * th[0] ** 2 * (1 + th[0] ** 2), jnp.zeros(3))
  out2 = laplace.riemannian_sampler(data_only, v, rtol=1e-9, atol=1e-11)
  np.testing.assert_allclose(out2.theta, v, atol=1e-9)
  # The evidence of a data term with no curvature at all has no maximiser: refused, not returned.
  with pytest.raises(ValueError, match="no positive curvature"):
    laplace.optimise_prior(jnp.zeros(2), jnp.ones(3))


def _nonfinite_beyond(th, edge):
  # Quadratic, but value AND gradient are nan beyond θ₀ > edge (edge = inf: the quadratic alone).
  return 0.5 * jnp.sum(th**2) + th[0] * jnp.where(th[0] > edge, jnp.nan, 0.0)


def test_non_finite_region_samples_are_reported_failed():
  lfit = _fit_for(lambda th: _nonfinite_beyond(th, 1.0), jnp.zeros(2))
  # The same network-free loss as data: objective(θ, edge), the true loss has edge 1.
  lfit = lfit._replace(objective=_nonfinite_beyond, loss=jnp.asarray(1.0))
  z = jnp.asarray([[0.3, 0.1], [0.5, -2.0], [3.0, 0.2], [2.0, 1.0]])
  crosses = np.asarray([False, False, True, True])
  euc = laplace.euclidean_sampler(lfit, z)
  np.testing.assert_array_equal(np.asarray(euc.success), ~crosses)
  # Geodesics that enter the region are stopped and labelled, never returned as samples.
  rie = laplace.riemannian_sampler(lfit, z, rtol=1e-7, atol=1e-9, max_steps=512)
  ok = np.asarray(rie.success)
  assert ok[0] and ok[1]
  np.testing.assert_array_equal(ok, ~crosses)
  names = laplace.summarise_failures(rie.details)["by_result"]
  assert names.get("nonfinite", 0) == 2, names
  # The linearised sampler's endpoint is checked under the TRUE loss too.
  lin_fit = lfit._replace(linearised=jnp.asarray(jnp.inf))  # the quadratic part only
  lin = laplace.linearised_sampler(lin_fit, z, rtol=1e-9, atol=1e-11)
  assert bool(jnp.all(lin.details.success))  # the quadratic geodesics themselves succeed ...
  np.testing.assert_array_equal(np.asarray(lin.success), ~crosses)  # ... their endpoints do not


def test_single_eigenvector_mode_moves_along_the_top_vector_only():
  lfit = _fit_for(lambda th: 0.5 * th @ jnp.diag(jnp.asarray([9.0, 4.0, 2.0])) @ th, jnp.zeros(3))
  v, out = laplace.posterior_samples(
    lfit, 1.0, jax.random.PRNGKey(0), 4, samplers=("euclidean",), mode="single", index=0
  )
  np.testing.assert_allclose(np.abs(np.asarray(v))[:, 1:], 0.0, atol=1e-12)
  assert float(jnp.min(jnp.abs(v[:, 0]))) > 0


def test_fit_eigenpairs_refuses_non_integer_counts():
  loss = lambda th: 0.5 * jnp.sum(th**2)
  with pytest.raises(ValueError, match="`k` must be a positive int"):
    laplace.fit_eigenpairs(loss, jnp.zeros(4), 2.5, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="`num_iters` must be a positive int"):
    laplace.fit_eigenpairs(loss, jnp.zeros(4), 2, jax.random.PRNGKey(0), num_iters=3.7)


# --- GGN Laplace (issue 26): Lanczos on 2s JᵀJ against the dense matrix.


def test_fit_ggn_eigenpairs_equal_the_dense_gauss_newton_matrix():
  u, params, lfit = _mlp_fit(alpha=0.3, k=4, curvature="ggn", check_minimum=False)
  p = lfit.theta_map.shape[0]
  res_fn = curvature.curvature_residual_fn(u, params, *lfit.triples, subset=lfit.subset)
  jac = jax.jacfwd(lambda th: res_fn(th).reshape(-1))(lfit.theta_map)  # (B·D, P) dense
  ggn = 2 * 0.5 * jac.T @ jac
  w, vecs = np.linalg.eigh(np.asarray(ggn))
  # The Lanczos default depth (2k + 10 < P) converges on the top of this spectrum; check exactly
  # with a full-depth run too.
  full = laplace.fit_ggn_eigenpairs(u, lfit.theta_map, lfit.loss, 4, jax.random.PRNGKey(9), p)
  for eig in (lfit.eig, full):
    np.testing.assert_allclose(np.asarray(eig.values), w[::-1][:4], rtol=1e-7)
    overlap = np.abs(np.asarray(eig.vectors) @ vecs[:, ::-1][:, :4])
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-6)
  # No α in the values (data term), and they differ from the Hessian's: the test can fail.
  _, _, hfit = _mlp_fit(alpha=0.3, k=4, check_minimum=False)
  assert not np.allclose(np.asarray(hfit.eig.values), w[::-1][:4], rtol=1e-3)
  # with_ggn on the Hessian fit gives the same eigenpairs; the tilt and α do not enter G.
  swapped = laplace.with_ggn(laplace.tilt(hfit), jax.random.PRNGKey(9), num_iters=p)
  np.testing.assert_allclose(np.asarray(swapped.eig.values), w[::-1][:4], rtol=1e-7)
  assert float(swapped.alpha) == float(hfit.alpha)
  with pytest.raises(ValueError, match="`curvature`"):
    _mlp_fit(curvature="fisher")


def test_ggn_fit_compiles_once_for_new_triples():
  from memjax.laplace import fitting

  _, _, lfit = _mlp_fit(alpha=0.3, k=4, curvature="ggn", check_minimum=False)
  before = fitting._ggn_eigenpairs._cache_size()
  new = lfit.loss._replace(x0=lfit.loss.x0 + 0.1, alpha=lfit.loss.alpha * 2)
  laplace.fit_ggn_eigenpairs(lfit.apply_fn, lfit.theta_map, new, 4, jax.random.PRNGKey(1))
  assert fitting._ggn_eigenpairs._cache_size() == before


# --- Evidence with the remaining directions (issue 26).


def test_evidence_remainder_brackets_the_full_spectrum_alpha():
  _, _, lfit = _mlp_fit(alpha=1.0, k=4, check_minimum=False)
  p = lfit.theta_map.shape[0]
  h_d = np.asarray(jax.hessian(lfit.loss_fn)(lfit.theta_map)) - np.eye(p)  # data term (α = 1)
  w = np.linalg.eigvalsh(h_d)[::-1]
  u = np.asarray(lfit.eig.vectors)
  proj = np.eye(p) - u.T @ u
  t_rem = float(np.trace(proj @ h_d @ proj))
  np.testing.assert_allclose(t_rem, w.sum() - float(jnp.sum(lfit.eig.values)), rtol=1e-8)
  a_k = float(laplace.optimise_prior(lfit.eig.values, lfit.theta_map).alpha)
  a_all = float(laplace.optimise_prior(jnp.asarray(w), lfit.theta_map).alpha)
  iso = laplace.optimise_prior(lfit.eig.values, lfit.theta_map, remainder_trace=t_rem)
  # The low-rank α̂ is biased low (0.50 vs 1.24 here); the isotropic remainder brackets it.
  assert a_k < 0.5 * a_all < a_all <= float(iso.alpha)
  # The remainder evidence equals the dense slogdet of U diag(λ) Uᵀ + λ̄ Π + αI.
  lam = np.maximum(np.asarray(lfit.eig.values), 0.0)
  lam_bar = t_rem / (p - 4)
  for alpha in (0.3, float(iso.alpha), 5.0):
    h = u.T @ np.diag(lam) @ u + lam_bar * proj + alpha * np.eye(p)
    want = (
      -0.5 * alpha * float(jnp.sum(lfit.theta_map**2))
      + 0.5 * p * np.log(alpha)
      - 0.5 * np.linalg.slogdet(h)[1]
    )
    got = laplace.log_evidence(lfit.eig.values, lfit.theta_map, alpha, remainder_trace=t_rem)
    np.testing.assert_allclose(float(got), want, rtol=1e-10)
  # MacKay's fixed point with the remainder's share of γ.
  gamma = np.sum(lam / (lam + iso.alpha)) + (p - 4) * lam_bar / (lam_bar + iso.alpha)
  np.testing.assert_allclose(float(iso.effective_params), gamma, rtol=1e-10)
  np.testing.assert_allclose(float(iso.alpha * jnp.sum(lfit.theta_map**2)), gamma, rtol=1e-8)
  # The Hutchinson estimate of tr(Π H_D Π) agrees with the dense value within its error.
  est, sem = laplace.remainder_trace(lfit, jax.random.PRNGKey(0), 400)
  assert abs(float(est) - t_rem) < 4 * float(sem) and float(sem) < 0.1 * t_rem
  # GGN: the same on 2s JᵀJ.
  u_fn, params, _ = _mlp_fit(alpha=1.0, k=4, check_minimum=False)
  res_fn = curvature.curvature_residual_fn(u_fn, params, *lfit.triples, subset=lfit.subset)
  jac = jax.jacfwd(lambda th: res_fn(th).reshape(-1))(lfit.theta_map)
  g = np.asarray(2 * 0.5 * jac.T @ jac)
  est_g, sem_g = laplace.remainder_trace(lfit, jax.random.PRNGKey(1), 400, curvature="ggn")
  assert abs(float(est_g) - np.trace(proj @ g @ proj)) < 4 * float(sem_g)
  with pytest.raises(ValueError, match="`num_probes`"):
    laplace.remainder_trace(lfit, jax.random.PRNGKey(1), 0)


def test_with_prior_after_tilt_keeps_theta_star_stationary():
  _, _, lfit = _mlp_fit(alpha=1.0, check_minimum=False)
  t = laplace.with_prior(laplace.tilt(lfit), 3.0)
  # Independent check: the gradient of the closure, not the fit's own grad_norm.
  assert float(jnp.linalg.norm(jax.grad(t.loss_fn)(t.theta_map))) < 1e-10
  assert float(jnp.linalg.norm(jax.grad(t.linearised_loss_fn)(t.theta_map))) < 1e-10
  assert float(t.grad_norm) < 1e-10 and float(t.alpha) == 3.0
  th = t.theta_map + 0.05
  np.testing.assert_allclose(
    jax.hessian(t.loss_fn)(th), jax.hessian(lfit.loss_fn)(th) + 2.0 * np.eye(th.shape[0]), atol=1e-9
  )
