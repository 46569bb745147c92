"""Compile once, call many: a second identical call of a public entry point must not re-trace.

Re-tracing is observed through JAX's own compile log (``jax.log_compiles``): every trace of a
jitted function logs "Finished tracing ...". The first call may trace; the second must add none.
"""

import contextlib
import functools
import logging

import jax
import jax.numpy as jnp
import pytest

from memjax import (
  curvature,
  denoisers,
  laplace,
  lid,
  memorisation,
  neighbours,
  nets,
  paths,
  sampling,
  sharpness,
)


class _Traces(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.count = 0

  def emit(self, record):
    if record.getMessage().startswith("Finished tracing"):
      self.count += 1


@contextlib.contextmanager
def _count_traces():
  handler = _Traces()
  logger = logging.getLogger("jax")
  old = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG)
  try:
    with jax.log_compiles(True):
      yield handler
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_the_trace_counter_counts():
  """A function that must retrace (a new static value) is counted: the counter is not vacuous."""
  f = jax.jit(lambda x, n: x * n, static_argnums=1)
  f(jnp.ones(2), 1)
  with _count_traces() as traces:
    f(jnp.ones(2), 2)
  assert traces.count >= 1


def _assert_second_call_reuses(call):
  jax.block_until_ready(call())  # warm: may trace and compile
  with _count_traces() as traces:
    jax.block_until_ready(call())
  assert traces.count == 0, f"second identical call re-traced {traces.count} time(s)"


MOD = nets.MLPField(dim=2, hidden=(8,), time_dim=4)
U = nets.velocity_fn(MOD)
PARAMS = nets.init_params(MOD, jax.random.PRNGKey(0), 2, jnp.float64)
DATA = jax.random.normal(jax.random.PRNGKey(1), (16, 2), jnp.float64)
TRIPLES = curvature.make_triples(jax.random.PRNGKey(2), DATA, 8)
SUBSET = curvature.param_subset(PARAMS, "['dense_0']")
LOSS = curvature.curvature_loss(U, PARAMS, *TRIPLES, subset=SUBSET, alpha=1.0, loss_scale=1.0)
THETA = SUBSET.theta
V = 0.01 * jax.random.normal(jax.random.PRNGKey(3), (3, THETA.shape[0]), jnp.float64)
FIELD = functools.partial(U, PARAMS)  # a batched field f(x, t), built once as a user would
X = DATA[:5]
KEY = jax.random.PRNGKey(4)
SCORE = paths.point_fn(FIELD, paths.linear_fm(), "velocity", "score")
G = lambda x: SCORE(x, jnp.asarray(0.5, x.dtype))

CASES = {
  "laplace.riemannian": lambda: laplace.riemannian(LOSS, THETA, V, rtol=1e-4, atol=1e-6),
  "laplace.fit_eigenpairs": lambda: laplace.fit_eigenpairs(LOSS, THETA, 2, KEY),
  "sampling.generate": lambda: sampling.generate(U, PARAMS, X, rtol=1e-3, atol=1e-3),
  "sampling.generate_multi": lambda: sampling.generate_multi(
    U, jax.tree.map(lambda p: jnp.stack([p, p]), PARAMS), X, solver="euler", num_steps=4
  ),
  "lid.flipd exact": lambda: lid.flipd(
    FIELD, X, 0.9, paths.linear_fm(), parameterisation="velocity"
  ),
  "lid.flipd hutchinson": lambda: lid.flipd(
    FIELD, X, 0.9, paths.linear_fm(), parameterisation="velocity", key=KEY, n_probes=2
  ),
  "lid.flipd_curve": lambda: lid.flipd_curve(
    FIELD, X, jnp.asarray([0.8, 0.9]), paths.linear_fm(), parameterisation="velocity"
  ),
  "lid.normal_bundle": lambda: lid.normal_bundle(
    FIELD, X, 0.9, paths.linear_fm(), KEY, parameterisation="velocity"
  ),
  "lid.lpca": lambda: lid.lpca(DATA, 5),
  "lid.mle": lambda: lid.mle(DATA, 5),
  "lid.twonn": lambda: lid.twonn(DATA),
  "sharpness.sharpness_profile": lambda: sharpness.sharpness_profile(
    SCORE, X, jnp.asarray([0.3, 0.6]), KEY, k=1
  ),
  "sharpness.sail": lambda: sharpness.sail(G, X, max_iters=3),
  "memorisation.nn_ratio": lambda: memorisation.nn_ratio(X + 0.1, DATA),
  "neighbours.knn": lambda: neighbours.knn(DATA, DATA, 3, exclude_self=True),
  "denoisers.posterior": lambda: denoisers.posterior(DATA, X, 0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_identical_call_does_not_retrace(name):
  _assert_second_call_reuses(CASES[name])


def test_quality_entry_points_do_not_retrace():
  """:func:`memjax.metrics.precision_recall` and the digits classifier's features."""
  from experiments.laplace import quality
  from memjax import metrics

  module = quality.DigitsMLP(hidden=(8,), feature_dim=4)
  clf = quality.DigitsClassifier(module, module.init(KEY, jnp.zeros((1, 64), jnp.float32)), {})
  images = jnp.zeros((5, 64), jnp.float32)
  _assert_second_call_reuses(lambda: metrics.precision_recall(DATA, DATA + 0.1, 3))
  _assert_second_call_reuses(lambda: quality.features(clf, images))


def test_laplace_prior_and_samplers_do_not_retrace():
  """:func:`memjax.laplace.optimise_prior` (bisection) and the Euclidean sampler's finite check."""
  values = jnp.asarray([4.0, 1.0, 0.5])
  _assert_second_call_reuses(lambda: laplace.optimise_prior(values, THETA))
  eig = laplace.fit_eigenpairs(LOSS, THETA, 2, KEY)
  objective = laplace.as_loss(LOSS)
  lfit = laplace.LaplaceFit(None, None, objective, None, THETA, eig, jnp.asarray(1.0), 0.0, 0.0)
  _assert_second_call_reuses(lambda: laplace.euclidean_sampler(lfit, V))


def _weight_space_workflow(seed):
  """fit → evidence prior → tilt → Euclidean, Riemannian and linearised samples, one seed."""
  key = jax.random.PRNGKey(seed)
  lfit = laplace.fit(
    U,
    PARAMS,
    DATA,
    key,
    k=2,
    alpha=1.0,
    num_triples=8,
    loss_scale=1.0,
    select="['dense_0']",
    num_iters=6,
    refine_tol=1e-3,
    refine_max_steps=5,
    min_iters=6,
  )
  lfit = laplace.with_prior(lfit, 2.0 + seed)
  lfit = laplace.tilt(lfit)
  geo = {"rtol": 1e-4, "atol": 1e-6, "max_steps": 64}
  _, out = laplace.posterior_samples(
    lfit,
    0.05,
    jax.random.fold_in(key, 7),
    3,
    samplers=("euclidean", "riemannian", "linearised"),
    options={"riemannian": geo, "linearised": geo},
    check=False,
  )
  return [o.theta for o in out.values()]


def test_weight_space_workflow_second_seed_traces_nothing():
  """A new seed (new triples, new θ*, new α, a tilt) at the same shapes reuses every program."""
  jax.block_until_ready(_weight_space_workflow(0))
  with _count_traces() as traces:
    jax.block_until_ready(_weight_space_workflow(1))
  assert traces.count == 0, f"a second seed re-traced {traces.count} time(s)"


def _quartic(theta, args):
  scale, centre = args
  return scale * jnp.sum((theta - centre) ** 4) + 0.5 * jnp.sum(theta**2)


def test_user_loss_with_args_compiles_once_across_data():
  """``riemannian`` / ``fit_eigenpairs`` / ``refine_map`` with ``loss(θ, args)``: new args reuse."""
  theta = jnp.zeros(3)
  v = 0.1 * jnp.ones((2, 3))

  def calls(args):
    laplace.riemannian(_quartic, theta, v, args=args, rtol=1e-5, atol=1e-7)
    laplace.fit_eigenpairs(_quartic, theta, 2, KEY, args=args)
    return laplace.refine_map(_quartic, theta + 0.3, tol=1e-6, max_steps=5, args=args).theta

  jax.block_until_ready(calls((jnp.asarray(1.0), jnp.ones(3))))
  with _count_traces() as traces:
    jax.block_until_ready(calls((jnp.asarray(2.0), -jnp.ones(3))))
  assert traces.count == 0, f"new args re-traced {traces.count} time(s)"


def test_map_rows_with_a_mesh_does_not_retrace():
  from memjax import distributed

  mesh = distributed.make_mesh()
  f = jax.vmap(lambda r: r * 2.0)
  _assert_second_call_reuses(lambda: distributed.map_rows(f, X, mesh=mesh))


def test_audit_run_second_identical_call_does_not_retrace():
  # Every lens, the weight-space view included.
  import numpy as np

  from memjax import audit

  model = audit.from_function(
    lambda p, x, t: jnp.tanh(x @ p) * (1.0 + t[:, None]), 0.5 * jnp.eye(3), data_shape=(3,)
  )
  cfg = audit.configs.get_config("smoke")
  cfg.sample.num_samples = 6
  cfg.lid.update(num_t0=3, lpca_k=5)
  cfg.regimes.num_sigmas = 4
  cfg.weight_space.update(select="", num_triples=4, k=2, num_posterior=2, geo_max_steps=32)
  train = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (10, 3)))
  run = lambda: audit.run(model, train, KEY, cfg, held_out=train[:5] + 0.1, progress=False)
  _assert_second_call_reuses(lambda: jnp.asarray(run().generation.samples))
