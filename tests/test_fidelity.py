"""The papers' definitions, each checked in float64 against an independent computation.

Each test here failed on the code before the fidelity fixes (prior counted twice, isotropic
default posterior, non-stationary θ*, FM t0 mapped as 1 − t0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import laplace, linalg, nets, paths


def _linear_field(params, x, t):
  # u(x, t) = W x + b + c t: linear in the parameters, so the FM loss is an exact quadratic.
  return x @ params["w"] + params["b"][None, :] + t[:, None] * params["c"][None, :]


def _linear_fit(alpha, k, **kw):
  d = 2
  params = {
    "w": jnp.asarray([[0.3, -0.1], [0.2, 0.5]]),
    "b": jnp.asarray([0.1, -0.2]),
    "c": jnp.asarray([0.05, 0.0]),
  }
  data = jax.random.normal(jax.random.PRNGKey(0), (12, d), jnp.float64)
  return laplace.fit(
    _linear_field,
    params,
    data,
    jax.random.PRNGKey(1),
    k=k,
    alpha=alpha,
    num_triples=12,
    loss_scale=1.0,
    num_iters=8,  # P = 8: a complete Krylov basis, converged pairs
    **kw,
  )


def test_alpha_counted_once_loss_to_covariance():
  alpha = 1.0
  lf = _linear_fit(alpha, k=8)  # P = 8: the Lanczos basis is complete
  hess = jax.hessian(lf.loss_fn)(lf.theta_map)  # data term + αI, exactly (quadratic loss)
  want = np.linalg.inv(np.asarray(hess))
  got = laplace.tangent_covariance_dense(laplace.tangent_gaussian(lf.eig, lf.alpha))
  np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
  # The eigenvalues are those of the data term: ∇²L − αI.
  np.testing.assert_allclose(
    np.sort(np.asarray(lf.eig.values)), np.linalg.eigvalsh(np.asarray(hess)) - alpha, atol=1e-8
  )


def test_alpha_once_on_the_issue_example():
  # Data eigenvalue 1 and α = 1: the posterior variance is 1/2 (the double count gave 1/3).
  eig = linalg.Eigenpairs(jnp.asarray([2.0 - 1.0]), jnp.eye(1), jnp.zeros(1))
  v = laplace.sample_velocities(eig, 1.0, 1.0, jax.random.PRNGKey(0), 200_000, mode="full")
  assert abs(float(jnp.var(v)) - 0.5) < 0.01


def test_sample_covariance_from_loss_matches_dense_inverse():
  lf = _linear_fit(0.5, k=8)
  v = laplace.sample_velocities(lf.eig, lf.alpha, 1.0, jax.random.PRNGKey(3), 100_000, mode="full")
  emp = np.cov(np.asarray(v).T)
  want = np.linalg.inv(np.asarray(jax.hessian(lf.loss_fn)(lf.theta_map)))
  scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))
  np.testing.assert_array_less(np.abs(emp - want) / scale, 0.03)  # ≈ 7 Monte-Carlo SEs


def test_default_posterior_is_the_low_rank_subspace():
  lf = _linear_fit(1.0, k=3)
  v = laplace.sample_velocities(lf.eig, lf.alpha, 1.0, jax.random.PRNGKey(4), 64)
  u = np.asarray(lf.eig.vectors)
  resid = np.asarray(v) - (np.asarray(v) @ u.T) @ u  # component outside span U
  assert np.max(np.abs(resid)) < 1e-10
  vf, samples = laplace.posterior_samples(
    lf, 1.0, jax.random.PRNGKey(4), 64, samplers=("euclidean",)
  )
  np.testing.assert_allclose(vf, v)


def test_refined_map_is_stationary_for_the_frozen_loss():
  mod = nets.MLPField(dim=1, hidden=(8,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, jax.random.PRNGKey(5), 1, jnp.float64)
  data = jnp.asarray([[-1.0], [1.0]])
  lf0 = laplace.fit(
    u, params, data, jax.random.PRNGKey(6), k=2, alpha=1.0, num_triples=64, loss_scale=1.0
  )
  lf = laplace.fit(
    u,
    params,
    data,
    jax.random.PRNGKey(6),
    k=2,
    alpha=1.0,
    num_triples=64,
    loss_scale=1.0,
    refine_tol=1e-6,
    refine_max_steps=2000,
  )
  assert float(lf0.grad_norm) > 1e-2  # a random network is far from stationary
  assert float(lf.grad_norm) <= 1e-6 and float(lf.grad_norm_initial) == float(lf0.grad_norm)
  np.testing.assert_allclose(
    float(jnp.linalg.norm(jax.grad(lf.loss_fn)(lf.theta_map))), float(lf.grad_norm), rtol=1e-6
  )


@pytest.mark.parametrize(
  "src,dst", [("vp_linear", "linear_fm"), ("linear_fm", "ve"), ("ve", "edm"), ("edm", "vp_linear")]
)
def test_noise_level_mapping_round_trip(src, dst):
  s, d = paths.get_schedule(src), paths.get_schedule(dst)
  lo, hi = sorted((s.t_data, s.t_noise))
  ts = jnp.linspace(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), 7)
  t_dst = paths.match_noise_level(ts, s, d)
  np.testing.assert_allclose(
    paths.noise_to_signal(d, t_dst), paths.noise_to_signal(s, ts), rtol=1e-9
  )
  np.testing.assert_allclose(paths.match_noise_level(t_dst, d, s), ts, rtol=1e-9, atol=1e-12)


def test_fm_t0_of_vp_005_is_not_095():
  t_fm = float(paths.match_noise_level(0.05, paths.vp_linear(), paths.linear_fm()))
  sig_psi = float(paths.noise_to_signal(paths.vp_linear(), 0.05))
  np.testing.assert_allclose(t_fm, 1.0 / (1.0 + sig_psi), rtol=1e-12)  # closed form for FM
  assert abs(t_fm - 0.852) < 2e-3 and abs(t_fm - 0.95) > 0.09


def test_heldout_stopping_keeps_the_best_and_stops():
  import optax

  from memjax import training

  mod = nets.MLPField(dim=1, hidden=(16,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, jax.random.PRNGKey(7), 1, jnp.float64)
  data = jnp.asarray([[-1.0], [1.0]])
  held = training.heldout_fm_loss(u, data, jax.random.PRNGKey(8), num=512)
  rule = training.HeldoutStopping(held, patience=2, min_rel_improvement=0.05)
  res = training.train(
    training.fm_objective(u, data, 64),
    params,
    optax.adam(3e-2),
    3000,
    jax.random.PRNGKey(9),
    chunk_size=50,
    progress=False,
    callback=rule,
  )
  steps, values = zip(*rule.history)
  assert rule.stopped_early and int(res.state.step) < 3000 and steps[-1] == int(res.state.step)
  assert rule.best_loss == min(values) and rule.best_step == steps[int(np.argmin(values))]
  np.testing.assert_allclose(float(held(rule.best_params)), rule.best_loss, rtol=1e-12)
  # The rule fired after `patience` evaluations without a 5 % improvement on the last
  # significant one.
  vals = np.asarray(values)
  ref = [vals[0]]
  for v in vals[1:]:
    ref.append(v if v < ref[-1] * 0.95 else ref[-1])
  last_sig = max(i for i in range(len(vals)) if i == 0 or ref[i] < ref[i - 1])
  assert len(vals) - 1 - last_sig == 2
