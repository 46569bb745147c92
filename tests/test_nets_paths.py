"""nets: shapes and validation; paths: converters agree on an analytic Gaussian for every
schedule.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import nets, paths

MOD = nets.MLPField(dim=3, hidden=(8, 8), time_dim=8)
U = nets.velocity_fn(MOD)
PARAMS = nets.init_params(MOD, jax.random.PRNGKey(0), 3, jnp.float64)


def test_field_shapes_and_dtype():
  x = jnp.ones((5, 3))
  assert U(PARAMS, x, jnp.linspace(0, 1, 5)).shape == (5, 3)
  assert U(PARAMS, x, 0.3).shape == (5, 3)
  assert U(PARAMS, x[0], 0.3).shape == (3,)
  assert all(l.dtype == jnp.float64 for l in jax.tree_util.tree_leaves(PARAMS))
  assert nets.num_params(PARAMS) > 0
  # Time enters: different t, different output.
  assert not np.allclose(U(PARAMS, x, 0.1), U(PARAMS, x, 0.9))


def test_field_vmaps_over_params():
  stack = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), PARAMS)
  out = jax.vmap(U, in_axes=(0, None, None))(stack, jnp.ones((4, 3)), 0.5)
  np.testing.assert_allclose(out[0], U(PARAMS, jnp.ones((4, 3)), 0.5))


@pytest.mark.parametrize(
  "x,t,match",
  [
    (jnp.ones((5, 2)), 0.5, r"\(\.\.\., 3\)"),
    (jnp.ones((5, 3)), jnp.ones((4,)), "`t` must be"),
  ],
)
def test_field_bad_shapes(x, t, match):
  with pytest.raises(ValueError, match=match):
    U(PARAMS, x, t)


def gaussian_truth(schedule, mu, cov, y, t):
  """Independent closed forms for data N(μ, Σ): score, E[x|y], E[ε|y] and the flow velocity."""
  psi, sig = schedule.psi(t), schedule.sigma(t)
  dpsi = jax.grad(schedule.psi)(t)
  dsig = jax.grad(schedule.sigma)(t)
  cov_t = psi**2 * cov + sig**2 * jnp.eye(mu.shape[0])
  prec = jnp.linalg.inv(cov_t)
  mu = mu[None, :]
  dev = y - psi * mu
  score = -dev @ prec.T
  x0 = mu + (psi * dev @ prec.T) @ cov.T
  eps = sig * (dev @ prec.T)
  # Velocity of the marginal flow: d/dt of the map y ↦ ψμ + A_t (y0 − ψ0 μ) that transports N(ψμ,
  # C_t):
  # equivalently u = ψ' x̂ + σ' ε̂ (checked below against a finite difference of the Gaussian
  # flow).
  return score, x0, eps, dpsi * x0 + dsig * eps


SCHEDULES = [paths.linear_fm(), paths.vp_linear(), paths.ve(sigma_min=0.05, sigma_max=5.0)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_converters_agree_on_gaussian(schedule):
  d = 3
  a = jax.random.normal(jax.random.PRNGKey(1), (d, d))
  cov = a @ a.T / d + 0.1 * jnp.eye(d)
  mu = jnp.array([0.5, -1.0, 2.0])
  y = jax.random.normal(jax.random.PRNGKey(2), (7, d))
  t = jnp.asarray(0.37)
  score, x0, eps, vel = gaussian_truth(schedule, mu, cov, y, t)
  truth = {"score": score, "x0": x0, "eps": eps, "velocity": vel}
  for src, val in truth.items():
    for dst, expected in truth.items():
      got = paths.convert(schedule, y, t, val, src, dst)
      np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=f"{src}->{dst}")


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_velocity_transports_gaussian_marginals(schedule):
  """Independent check of u = ψ' x̂ + σ' ε̂: the 1D Gaussian flow ODE moves quantiles of p_t.

  For data N(μ, s²), p_t = N(ψμ, ψ²s² + σ²); the quantile y_t = ψμ + c·√(ψ²s²+σ²) must satisfy ẏ =
  u(y, t).
  """
  mu, s2, c = 0.7, 0.3, 1.3

  def quantile(t):
    return schedule.psi(t) * mu + c * jnp.sqrt(schedule.psi(t) ** 2 * s2 + schedule.sigma(t) ** 2)

  for t in (0.2, 0.5, 0.8):
    t = jnp.asarray(t)
    y = quantile(t).reshape(1, 1)
    _, _, _, vel = gaussian_truth(schedule, jnp.array([mu]), jnp.array([[s2]]), y, t)
    np.testing.assert_allclose(vel[0, 0], jax.grad(quantile)(t), rtol=1e-9)


def test_fm_schedule_identities():
  s = paths.linear_fm()
  y = jnp.ones((2, 3)) * 0.4
  u = jnp.arange(6.0).reshape(2, 3)
  # ε̂ = y − t·u for linear FM (DESIGN, seed 002).
  np.testing.assert_allclose(paths.velocity_to_eps(s, y, 0.3, u), y - 0.3 * u, rtol=1e-12)
  xt, target = paths.fm_interpolate(jnp.ones((2, 3)), jnp.zeros((2, 3)), jnp.array([0.25, 0.5]))
  np.testing.assert_allclose(xt[:, 0], [0.25, 0.5])
  np.testing.assert_allclose(target, 1.0)


def test_bad_parameterisation_name():
  with pytest.raises(ValueError, match="`src`"):
    paths.convert(paths.linear_fm(), jnp.ones((1, 2)), 0.5, jnp.ones((1, 2)), "logits", "score")
  with pytest.raises(ValueError, match="`name`"):
    paths.get_schedule("cosine")
