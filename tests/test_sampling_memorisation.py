"""sampling against closed-form flows; memorisation against brute force and the Apollonius ball."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import memorisation as mem
from memjax import neighbours, sampling


def linear_field(a, x, t):
  """u(x, t) = a·x·(1 + t): closed-form flow x(1) = x0·exp(a·1.5)."""
  return a * x * (1.0 + jnp.asarray(t)[..., None])


X0 = jax.random.normal(jax.random.PRNGKey(0), (6, 3))


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_adaptive_generation_matches_closed_form(solver):
  res = sampling.generate(linear_field, 0.7, X0, solver=solver, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(res.x, X0 * np.exp(0.7 * 1.5), rtol=1e-8)
  assert res.result.shape == (6,) and np.all(res.success) and np.all(res.num_steps > 0)


def test_euler_is_first_order_and_fixed_step():
  errs = []
  for n in (20, 40):
    res = sampling.generate(linear_field, 0.7, X0, solver="euler", num_steps=n)
    assert np.all(res.num_steps == n)
    errs.append(float(jnp.max(jnp.abs(res.x - X0 * np.exp(1.05)))))
  assert 1.8 < errs[0] / errs[1] < 2.2


def test_generate_multi_vmaps_over_params_and_reports_failures():
  a = jnp.array([0.1, -0.5, 0.9])
  res = sampling.generate_multi(linear_field, a, X0, rtol=1e-10, atol=1e-10)
  assert res.x.shape == (3, 6, 3)
  np.testing.assert_allclose(
    res.x, X0[None] * np.exp(1.5 * np.asarray(a))[:, None, None], rtol=1e-8
  )
  bad = sampling.generate(linear_field, 0.7, X0, max_steps=2)
  assert not np.any(bad.success)
  summary = sampling.summarise(bad)
  assert summary["num_failed"] == 6 and "maximum number" in next(iter(summary["failures"]))


def test_generate_validates():
  with pytest.raises(ValueError, match="`x0`"):
    sampling.generate(linear_field, 0.1, jnp.ones((3,)))
  with pytest.raises(ValueError, match="`x0`"):
    sampling.generate(linear_field, 0.1, jnp.array([[np.nan, 1.0]]))
  with pytest.raises(ValueError, match="`solver`"):
    sampling.generate(linear_field, 0.1, X0, solver="rk4")


@pytest.mark.parametrize(
  "q,n,d,qc,tc", [(37, 53, 5, 8, 7), (10, 2, 3, 1024, 4096), (64, 300, 12, 16, 64)]
)
def test_nearest_two_equals_brute_force(q, n, d, qc, tc):
  kq, kt = jax.random.split(jax.random.PRNGKey(q))
  queries = jax.random.normal(kq, (q, d))
  train = jax.random.normal(kt, (n, d))
  nn = neighbours.nearest_two(queries, train, query_chunk=qc, train_chunk=tc)
  dist = np.linalg.norm(np.asarray(queries)[:, None] - np.asarray(train)[None], axis=-1)
  order = np.argsort(dist, 1)
  np.testing.assert_allclose(nn.d1, dist[np.arange(q), order[:, 0]], rtol=1e-12)
  np.testing.assert_allclose(nn.d2, dist[np.arange(q), order[:, 1]], rtol=1e-12)
  np.testing.assert_array_equal(nn.i1, order[:, 0])
  r = mem.nn_ratio(queries, train, query_chunk=qc, train_chunk=tc, squared=False)
  r_ref = dist[np.arange(q), order[:, 0]] / dist[np.arange(q), order[:, 1]]
  np.testing.assert_allclose(r, r_ref, rtol=1e-12)
  # The default is the papers' squared criterion.
  np.testing.assert_allclose(mem.nn_ratio(queries, train), r_ref**2, rtol=1e-12)
  cs = (0.2, 1 / 3, 0.5, 1.0)
  np.testing.assert_allclose(mem.memorised_fraction(r, cs), [(r_ref <= c).mean() for c in cs])


def test_images_and_exact_copies():
  train = jax.random.normal(jax.random.PRNGKey(0), (20, 4, 4, 3))
  samples = train[:5] + 1e-6
  r = mem.nn_ratio(samples, train)
  assert np.all(np.asarray(r) < 1e-4)
  assert float(mem.memorised_fraction(r, [1 / 3])[0]) == 1.0


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("c", [0.1, 1 / 3, 0.6])
def test_memorised_set_is_apollonius_ball(c, squared):
  key = jax.random.PRNGKey(int(100 * c))
  for k in jax.random.split(key, 5):
    ka, kb, kx = jax.random.split(k, 3)
    a, b = jax.random.normal(ka, (3,)), jax.random.normal(kb, (3,))
    centre, radius = mem.apollonius_ball(a, b, c, squared=squared)
    pts = centre[None] + radius * jax.random.normal(kx, (4000, 3))
    inside = jnp.linalg.norm(pts - centre[None], axis=-1) <= radius
    crit = mem.is_memorised(pts, a, b, c, squared=squared)
    margin = jnp.abs(jnp.linalg.norm(pts - centre[None], axis=-1) - radius) > 1e-9
    np.testing.assert_array_equal(inside[margin], crit[margin])
    # Through the nearest-two ratio on the training set {a, b}: memorised iff inside either
    # point's ball.
    centre_b, radius_b = mem.apollonius_ball(b, a, c, squared=squared)
    inside_b = jnp.linalg.norm(pts - centre_b[None], axis=-1) <= radius_b
    margin_b = jnp.abs(jnp.linalg.norm(pts - centre_b[None], axis=-1) - radius_b) > 1e-9
    r = mem.nn_ratio(pts, jnp.stack([a, b]), squared=squared)
    keep = margin & margin_b
    np.testing.assert_array_equal((inside | inside_b)[keep], (r <= c)[keep])
    assert 0.05 < float(inside.mean()) < 0.95


def test_papers_squared_criterion_on_a_constructed_case():
  # Training points a = 0 and b = 3 on a line; x̂ = 1 has d1 = 1, d2 = 2: d1²/d2² = 0.25 ≤ 1/3, so
  # the papers' criterion marks it memorised at c = 1/3, while the unsquared ratio 0.5 does not.
  train = jnp.asarray([[0.0], [3.0]])
  x = jnp.asarray([[1.0]])
  np.testing.assert_allclose(mem.nn_ratio(x, train), [0.25], rtol=1e-15)
  assert float(mem.memorised_fraction(mem.nn_ratio(x, train), [1 / 3])[0]) == 1.0
  assert float(mem.memorised_fraction(mem.nn_ratio(x, train, squared=False), [1 / 3])[0]) == 0.0
  assert bool(mem.is_memorised(x[0], train[0], train[1], 1 / 3))
  assert 1.0 not in mem.DEFAULT_CS
  summary = mem.summary(mem.nn_ratio(x, train), [1 / 3])
  assert summary["M_c"] == {mem.c_label(1 / 3): 1.0} and mem.c_label(1 / 3) == "0.3333"


def test_memorisation_validation():
  with pytest.raises(ValueError, match="`cs`"):
    mem.memorised_fraction(jnp.ones(3) * 0.5, [0.0, 0.5])
  with pytest.raises(ValueError, match="`cs`"):
    mem.memorised_fraction(jnp.ones(3) * 0.5, [1.5])
  with pytest.raises(ValueError, match="`train`"):
    mem.nn_ratio(jnp.ones((3, 2)), jnp.ones((1, 2)))
  with pytest.raises(ValueError, match="same point shape"):
    mem.nn_ratio(jnp.ones((3, 2)), jnp.ones((4, 3)))
  distinct = jnp.arange(8.0).reshape(4, 2)
  with pytest.raises(ValueError, match="`samples`"):  # the caller's argument name
    mem.nn_ratio(jnp.array([[np.inf, 0.0]]), distinct)
  with pytest.raises(ValueError, match="at least one point"):
    mem.nn_ratio(jnp.ones((0, 2)), distinct)
  with pytest.raises(ValueError, match="2 distinct points"):
    mem.nn_ratio(jnp.ones((3, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="`r`"):
    mem.memorised_fraction(jnp.zeros((0,)), [0.5])
  with pytest.raises(ValueError, match="`c`"):
    mem.apollonius_ball(jnp.zeros(2), jnp.ones(2), 1.0)


def test_euler_trajectory_matches_generate_euler_and_closed_form_steps():
  field = lambda x, t: linear_field(0.7, x, t)
  traj = sampling.euler_trajectory(field, X0, 10)
  assert traj.shape == (11, 6, 3)
  np.testing.assert_allclose(
    traj[-1], sampling.generate(linear_field, 0.7, X0, solver="euler", num_steps=10).x, rtol=1e-12
  )
  # One step by hand: x1 = x0 + h·a·x0·(1 + 0).
  np.testing.assert_allclose(traj[1], X0 * (1 + 0.1 * 0.7), rtol=1e-12)
