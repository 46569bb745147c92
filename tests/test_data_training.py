"""data: determinism and the exact two-point field; training: loss, EMA, exact resume after a
kill.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from memjax import data, nets, training


def test_two_point_and_mixture_deterministic():
  np.testing.assert_array_equal(data.two_point(2.0)[:, 0], [-2.0, 2.0])
  gmm = data.ring_mixture(4)
  a, ca = data.sample_mixture(jax.random.PRNGKey(3), gmm, 50)
  b, cb = data.sample_mixture(jax.random.PRNGKey(3), gmm, 50)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ca, cb)
  s = data.subset(jax.random.PRNGKey(0), a, 10)
  assert s.shape == (10, 2) and len({tuple(r) for r in np.asarray(s)}) == 10


def test_mixture_log_prob_matches_scipy():
  from scipy import stats

  gmm = data.gaussian_mixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 1.5], [0.3, 0.7], dtype=jnp.float64)
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 2), jnp.float64)
  ref = np.log(
    sum(
      w * stats.multivariate_normal(m, s**2 * np.eye(2)).pdf(np.asarray(x))
      for m, s, w in zip(np.asarray(gmm.means), np.asarray(gmm.stds), np.asarray(gmm.weights))
    )
  )
  np.testing.assert_allclose(data.mixture_log_prob(gmm, x), ref, rtol=1e-10)


def test_bad_inputs():
  with pytest.raises(ValueError, match="`m`"):
    data.two_point(-1.0)
  with pytest.raises(ValueError, match="`weights`"):
    data.gaussian_mixture([[0.0], [1.0]], 1.0, [0.2, 0.2])
  with pytest.raises(ValueError, match="`means`"):
    data.gaussian_mixture([[np.nan], [1.0]], 1.0)
  with pytest.raises(ValueError, match="`data`"):
    training.fm_objective(lambda p, x, t: x, jnp.array([[np.nan]]), 4)
  with pytest.raises(ValueError, match="`n`"):
    data.subset(jax.random.PRNGKey(0), jnp.ones((3, 1)), 5)


def test_two_point_velocity_equals_posterior_mean_field():
  """u* (tanh form) equals (E[x1|x_t] − x)/(1 − t) from the softmax posterior over {−m, m} (brute
  force).
  """
  m = 1.3
  x = jnp.linspace(-3, 3, 41)
  for t in (0.1, 0.5, 0.85):
    train = jnp.array([-m, m])
    logw = -((x[:, None] - t * train[None, :]) ** 2) / (2 * (1 - t) ** 2)
    post_mean = jnp.sum(jax.nn.softmax(logw, axis=1) * train[None, :], axis=1)
    np.testing.assert_allclose(
      data.two_point_velocity(x, t, m), (post_mean - x) / (1 - t), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(data.two_point_velocity(-x, t, m), -data.two_point_velocity(x, t, m))


def test_fm_loss_matches_manual():
  field = lambda p, x, t: p * x + t[:, None]
  x1, x0, t = jnp.array([[1.0, 2.0]]), jnp.array([[0.5, -1.0]]), jnp.array([0.25])
  xt = 0.75 * x0 + 0.25 * x1
  expected = jnp.sum((2.0 * xt + 0.25 - (x1 - x0)) ** 2)
  np.testing.assert_allclose(training.fm_loss(field, 2.0, x1, x0, t), expected)


MOD = nets.MLPField(dim=1, hidden=(16, 16), time_dim=8)
U = nets.velocity_fn(MOD)


def _setup():
  params = nets.init_params(MOD, jax.random.PRNGKey(0), 1, jnp.float64)
  loss_fn = training.fm_objective(U, data.two_point(1.0, jnp.float64), 32)
  return params, loss_fn, optax.adam(1e-2)


class _Killed(Exception):
  pass


def test_training_decreases_loss_and_ema():
  params, loss_fn, opt = _setup()
  res = training.train(
    loss_fn, params, opt, 300, jax.random.PRNGKey(1), chunk_size=100, ema_decay=0.9, progress=False
  )
  assert res.losses.shape == (300,) and np.all(np.isfinite(res.losses))
  assert res.losses[-50:].mean() < 0.7 * res.losses[:50].mean()
  # EMA differs from the raw params but stays close to them.
  diff = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), res.state.ema_params, res.state.params
  )
  assert 0 < max(jax.tree_util.tree_leaves(diff)) < 0.5


def test_killed_run_resumes_to_identical_params(tmp_path):
  params, loss_fn, opt = _setup()
  key = jax.random.PRNGKey(7)
  kw = dict(chunk_size=50, ema_decay=0.95, progress=False)

  def kill_after_two_chunks(state, losses):
    if int(state.step) >= 100:
      raise _Killed

  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(_Killed):
    training.train(
      loss_fn, params, opt, 250, key, checkpoint_dir=ckpt, callback=kill_after_two_chunks, **kw
    )
  resumed = training.train(loss_fn, params, opt, 250, key, checkpoint_dir=ckpt, **kw)
  straight = training.train(loss_fn, params, opt, 250, key, **kw)
  assert resumed.resumed_from == 100
  chex.assert_trees_all_equal(
    (resumed.state.params, resumed.state.ema_params, resumed.state.opt_state),
    (straight.state.params, straight.state.ema_params, straight.state.opt_state),
  )
  np.testing.assert_array_equal(resumed.losses, straight.losses)
  # A finished run in the same directory restores and does nothing more.
  again = training.train(loss_fn, params, opt, 250, key, checkpoint_dir=ckpt, **kw)
  assert again.resumed_from == 250
