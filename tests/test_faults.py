"""Fault injection: every bad input a new user tried ends in a correct result or a clear error
naming the argument — never silent garbage."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from memjax import denoisers, lid, memorisation, nets, paths, training

TRAIN = jax.random.normal(jax.random.PRNGKey(0), (20, 3))


def _gauss_eps(y, t):
  # ε̂ of N(0, I) data under VP: ε̂(y) = σ y / (ψ² + σ²) = σ y.
  sched = paths.vp_linear()
  return sched.sigma(t)[:, None] * y


# --- dtypes: integer inputs are promoted, scalar settings never become integers.


def test_integer_data_to_posterior_is_promoted_not_cast_to_int_sigma():
  train_int = jnp.asarray(np.arange(12).reshape(6, 2), jnp.int32)
  y_int = jnp.asarray([[1, 2], [5, 5]], jnp.int32)
  got = denoisers.posterior(train_int, y_int, 0.5)
  want = denoisers.posterior(train_int.astype(float), y_int.astype(float), 0.5)
  assert jnp.issubdtype(got.denoiser.dtype, jnp.floating)
  np.testing.assert_allclose(got.denoiser, want.denoiser, rtol=1e-12)
  assert np.all(np.isfinite(np.asarray(got.entropy)))


def test_integer_points_to_flipd_keep_a_float_t0():
  x_int = jnp.asarray([[1, 0, 2], [0, 1, 1]], jnp.int32)
  got = lid.flipd(_gauss_eps, x_int, 0.05, paths.vp_linear(), parameterisation="eps")
  want = lid.flipd(_gauss_eps, x_int.astype(float), 0.05, paths.vp_linear(), parameterisation="eps")
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert np.all(np.abs(np.asarray(got) - 3.0) > 1e-6)  # not exactly D (t0 did not become 0)


def test_uint8_images_to_nn_ratio():
  imgs = jnp.asarray(np.random.default_rng(0).integers(0, 255, (10, 4, 4, 1)), jnp.uint8)
  r = memorisation.nn_ratio(imgs[:3], imgs)
  np.testing.assert_allclose(r, 0.0)


def test_int32_data_to_fm_objective_trains():
  mod = nets.MLPField(dim=2, hidden=(4,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, jax.random.PRNGKey(1), 2, jnp.float64)
  data = jnp.asarray([[1, 0], [0, 1], [-1, 0]], jnp.int32)
  res = training.train(
    training.fm_objective(u, data, 8),
    params,
    optax.adam(1e-2),
    20,
    jax.random.PRNGKey(2),
    chunk_size=10,
    progress=False,
  )
  assert np.all(np.isfinite(res.losses))


# --- contracts on user callables and ranges.


def test_flipd_field_with_wrong_output_shape_is_refused():
  bad = lambda y, t: jnp.sum(y, axis=1)  # (B,) instead of (B, D)
  with pytest.raises(ValueError, match="`field` must return shape"):
    lid.flipd(bad, TRAIN[:4], 0.05, paths.vp_linear(), parameterisation="eps")


@pytest.mark.parametrize(
  "sched,t0", [("vp_linear", -0.1), ("vp_linear", 1.5), ("vp_linear", 3.0), ("linear_fm", -0.5)]
)
def test_flipd_t0_outside_the_schedule_range(sched, t0):
  with pytest.raises(ValueError, match="`t0` must lie in the time range"):
    lid.flipd(_gauss_eps, TRAIN[:4], t0, paths.get_schedule(sched), parameterisation="eps")


def test_memorised_fraction_of_nothing_is_an_error():
  with pytest.raises(ValueError, match="`r`"):
    memorisation.memorised_fraction(jnp.zeros((0,)))


def test_nn_ratio_names_the_callers_argument():
  with pytest.raises(ValueError, match="`samples`"):
    memorisation.nn_ratio(jnp.asarray([[np.nan, 0.0, 0.0]]), TRAIN)


def test_copy_of_a_duplicated_training_point_is_memorised():
  train = jnp.concatenate([TRAIN, TRAIN[:1]])  # point 0 stored twice
  r = memorisation.nn_ratio(TRAIN[:1], train)
  np.testing.assert_allclose(r, 0.0)  # not r = 1 from d1 = d2 = 0


def test_normal_bundle_checks_the_field_too():
  bad = functools.partial(lambda y, t, k: y[:, :k], k=2)
  with pytest.raises(ValueError, match="`field`"):
    lid.normal_bundle(
      bad, TRAIN[:4], 0.05, paths.vp_linear(), jax.random.PRNGKey(0), parameterisation="eps"
    )


# --- Lanczos you can trust.


def _rank3_loss():
  a = jax.random.normal(jax.random.PRNGKey(3), (3, 50))
  y = jnp.arange(3.0)
  return lambda th: jnp.sum((a @ th - y) ** 2) + 0.5 * jnp.sum(th**2), 2 * a.T @ a + jnp.eye(50)


def test_lanczos_on_low_rank_plus_identity_returns_the_true_eigenpairs():
  from memjax import laplace

  loss, hess = _rank3_loss()
  eig = laplace.fit_eigenpairs(loss, jnp.zeros(50), 5, jax.random.PRNGKey(4))
  want = np.linalg.eigvalsh(np.asarray(hess))[::-1][:5]
  np.testing.assert_allclose(eig.values, want, rtol=1e-10)  # [λ1, λ2, λ3, 1, 1]
  assert float(jnp.max(eig.residuals)) < 1e-8
  np.testing.assert_allclose(eig.vectors @ eig.vectors.T, np.eye(5), atol=1e-10)
  data_term = eig._replace(values=eig.values - 1.0)  # the prior ½||θ||² is α = 1
  v = laplace.sample_velocities(data_term, 1.0, 1.0, jax.random.PRNGKey(5), 100_000, mode="full")
  cov = np.cov(np.asarray(v).T)
  dense = np.linalg.inv(np.asarray(hess))
  assert np.max(np.abs(cov - dense)) < 0.03  # ≈ 6 Monte-Carlo standard errors


def test_lanczos_on_the_identity():
  from memjax import linalg

  eig = linalg.lanczos_topk(lambda v: v, 50, 5, jax.random.PRNGKey(6))
  np.testing.assert_allclose(eig.values, 1.0, rtol=1e-12)
  assert float(jnp.max(eig.residuals)) < 1e-10


def test_lanczos_float32_at_a_large_dimension_keeps_real_off_diagonals():
  # A spread spectrum in float32 at P = 1e5 (the all-weights UNet's regime: λ_max ~ 1e5, the
  # bulk ~ 10). A breakdown bound that scales with P (10·P·ε ≈ 0.1·||T||) dropped real β at
  # nearly every step, and the top Ritz pairs came back with residuals ~ 5 % of λ_max.
  from memjax import linalg

  dim = 100_000
  top = np.asarray([1e5, 2e4, 5e3, 1e3], np.float32)
  bulk = np.linspace(0.0, 20.0, dim - top.size, dtype=np.float32)
  diag = jnp.asarray(np.concatenate([top, bulk]))
  eig = linalg.lanczos_topk(
    lambda v: diag * v, dim, 4, jax.random.PRNGKey(3), num_iters=40, dtype=jnp.float32
  )
  linalg.check_eigenpairs(eig, rtol=1e-3)
  np.testing.assert_allclose(eig.values, top, rtol=1e-3)
  # Brute force: the Ritz vectors are the coordinate axes of the top eigenvalues.
  np.testing.assert_allclose(np.abs(np.asarray(eig.vectors)[:, :4]), np.eye(4), atol=1e-3)


def test_unconverged_eigenpairs_are_refused_by_the_sampler():
  from memjax import laplace, linalg

  hess = jnp.diag(jnp.linspace(1.0, 100.0, 60))
  eig = linalg.lanczos_topk(lambda v: hess @ v, 60, 8, jax.random.PRNGKey(7), num_iters=8)
  with pytest.raises(ValueError, match="num_iters"):
    laplace.sample_velocities(eig, 1.0, 0.1, jax.random.PRNGKey(8), 4)
  v = laplace.sample_velocities(eig, 1.0, 0.1, jax.random.PRNGKey(8), 4, check=False)
  assert v.shape == (4, 60)


# --- solver diagnostics.


def test_geodesic_meeting_a_nonfinite_loss_is_reported_as_nonfinite():
  from memjax import laplace, sampling

  loss = lambda th: jnp.where(th[0] > 0.5, jnp.nan, 1.0) * jnp.sum(th**2) + th[0]
  v = jnp.asarray([[1.0, 0.0, 0.0], [-0.1, 0.1, 0.0]])
  res = laplace.riemannian(loss, jnp.zeros(3), v, max_steps=4096)
  assert [sampling.result_name(c) for c in res.result] == ["nonfinite", "successful"]
  assert int(res.num_steps[0]) < 200  # stopped early, not after the whole budget
  assert laplace.summarise_failures(res)["by_result"] == {"successful": 1, "nonfinite": 1}


def test_generation_meeting_a_nonfinite_field_is_reported_as_nonfinite():
  from memjax import sampling

  def u(params, x, t):
    return jnp.where(x > params, jnp.nan, 1.0 + 0.0 * x)

  res = sampling.generate(u, jnp.asarray(0.5), jnp.asarray([[0.0], [-2.0]]), max_steps=4096)
  assert [sampling.result_name(c) for c in res.result] == ["nonfinite", "successful"]
  assert int(res.num_steps[0]) < 200


# --- checkpoints that never lie.


def _ckpt_setup():
  mod = nets.MLPField(dim=1, hidden=(4,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, jax.random.PRNGKey(11), 1, jnp.float64)
  data = jnp.asarray([[-1.0], [1.0]])
  return training.fm_objective(u, data, 8), params, optax.adam(1e-2), data


def _train(ckpt, num_steps=100, **kw):
  loss_fn, params, opt, data = _ckpt_setup()
  kw = dict(dict(chunk_size=25, progress=False, checkpoint_dir=str(ckpt), max_to_keep=2), **kw)
  return training.train(loss_fn, params, opt, num_steps, jax.random.PRNGKey(12), **kw)


def _data_files(step_dir):
  import os

  out = []
  for root, _, files in os.walk(step_dir):
    out += [os.path.join(root, f) for f in files if os.path.getsize(os.path.join(root, f)) > 0]
  return out


def _flip_a_byte_in_every_file(step_dir):
  """Flip the middle byte of every non-empty file of a saved step (one of them holds the
  params): damage a checksum must catch, with every file still present and readable."""
  for f in _data_files(step_dir):
    raw = bytearray(open(f, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(f, "wb").write(bytes(raw))


def test_flipped_byte_in_the_latest_step_falls_back_and_keeps_the_good_step(tmp_path):
  import os

  ckpt = tmp_path / "ckpt"
  first = _train(ckpt, 50)  # steps 25, 50 on disk
  _flip_a_byte_in_every_file(ckpt / "50" / "state")
  with pytest.warns(UserWarning, match="Moved aside"):
    res = _train(ckpt, 100)
  assert res.resumed_from == 25
  assert any(n.startswith("corrupt-50") for n in os.listdir(ckpt))  # kept for inspection
  straight = _train(tmp_path / "fresh", 100)
  np.testing.assert_array_equal(res.losses, straight.losses)  # bit-for-bit the same run
  assert first.resumed_from == 0


@pytest.mark.parametrize("damage", ["truncate", "delete_manifest", "missing_state"])
def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, damage):
  import os
  import shutil

  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50)
  step = ckpt / "50"
  if damage == "truncate":
    for f in _data_files(step):
      open(f, "wb").close()
  elif damage == "delete_manifest":
    for f in _data_files(step):
      if "manifest" in os.path.basename(f) or os.path.basename(f) == "_METADATA":
        os.remove(f)
    shutil.rmtree(step / "metadata", ignore_errors=True)
  else:
    shutil.rmtree(step / "state")
  with pytest.warns(UserWarning, match="resuming from step 25"):
    res = _train(ckpt, 75)
  assert res.resumed_from == 25 and int(res.state.step) == 75


def test_extending_a_finished_run_continues_it(tmp_path):
  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50)
  longer = _train(ckpt, 100)
  straight = _train(tmp_path / "fresh", 100)
  assert longer.resumed_from == 50
  np.testing.assert_array_equal(longer.losses, straight.losses)


def test_smaller_num_steps_than_stored_is_an_error(tmp_path):
  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50)
  with pytest.raises(training.CheckpointError, match="num_steps"):
    _train(ckpt, 25)


def test_checkpoint_of_another_architecture_is_refused_and_nothing_is_moved(tmp_path):
  import os

  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50)  # hidden (4,): steps 25 and 50 on disk
  before = sorted(os.listdir(ckpt))
  loss_fn, _, opt, _ = _ckpt_setup()
  wider = nets.init_params(
    nets.MLPField(dim=1, hidden=(8,), time_dim=4), jax.random.PRNGKey(11), 1, jnp.float64
  )
  with pytest.raises(training.CheckpointError, match="another parameter tree.*Nothing was moved"):
    training.train(
      loss_fn,
      wider,
      opt,
      100,
      jax.random.PRNGKey(12),
      chunk_size=25,
      progress=False,
      checkpoint_dir=str(ckpt),
      max_to_keep=2,
    )
  assert sorted(os.listdir(ckpt)) == before  # both valid steps in place, no corrupt-*
  assert _train(ckpt, 75).resumed_from == 50  # and the original run still resumes


def test_all_steps_corrupt_starts_fresh_and_keeps_them_aside(tmp_path):
  import os

  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50)
  for step in ("25", "50"):
    _flip_a_byte_in_every_file(ckpt / step / "state")
  with pytest.warns(UserWarning, match="no intact step: starting fresh"):
    res = _train(ckpt, 50)
  assert res.resumed_from == 0
  names = os.listdir(ckpt)
  assert any(n.startswith("corrupt-25") for n in names) and any(
    n.startswith("corrupt-50") for n in names
  )


def test_same_directory_other_run_is_refused(tmp_path):
  ckpt = tmp_path / "ckpt"
  _train(ckpt, 50, fingerprint={"data": "set A"})
  with pytest.raises(training.CheckpointError, match="another run"):
    _train(ckpt, 100, fingerprint={"data": "set B"})


def test_resuming_with_changed_data_is_refused_without_a_fingerprint(tmp_path):
  # The README's snippet: checkpoint_dir and an fm_objective, no `fingerprint=`. Changing the
  # data and running again must not silently resume the old run.
  ckpt = tmp_path / "ckpt"
  loss_fn, params, opt, data = _ckpt_setup()
  assert loss_fn.data_fingerprint == training.data_fingerprint(data)
  kw = dict(chunk_size=25, progress=False, checkpoint_dir=str(ckpt))
  training.train(loss_fn, params, opt, 50, jax.random.PRNGKey(12), **kw)
  u = nets.velocity_fn(nets.MLPField(dim=1, hidden=(4,), time_dim=4))
  other = training.fm_objective(u, data.at[0, 0].set(-1.5), 8)  # one value changed
  with pytest.raises(training.CheckpointError, match="other data"):
    training.train(other, params, opt, 100, jax.random.PRNGKey(12), **kw)
  res = training.train(loss_fn, params, opt, 100, jax.random.PRNGKey(12), **kw)  # same data
  assert res.resumed_from == 50
  # The small training set is stored inline in the checkpoint, and rebuilds bit for bit.
  from memjax import data as data_lib
  from memjax.audit import model

  meta = model.read_checkpoint(str(ckpt)).metadata
  train, held = data_lib.from_recipe(meta["data"])
  np.testing.assert_array_equal(train, data)
  assert held is None
  assert meta["fingerprint"]["data"]["sha256"] == training.data_fingerprint(data)["sha256"]


_KILL_SCRIPT = r"""
import os, sys, time
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[2])
import test_faults as tf
tf._train(sys.argv[1], 1000)
"""


def test_kill_9_during_training_resumes_bit_for_bit(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time

  ckpt = tmp_path / "ckpt"
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.path.dirname(here))
  proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(ckpt), here], env=env)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in os.listdir(ckpt) if d.isdigit()] if ckpt.exists() else []
    if len(steps) >= 2:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)  # no clean-up: possibly mid-save
  proc.wait()
  # A stale temporary directory of an interrupted save must not break the resume either.
  (ckpt / "999.orbax-checkpoint-tmp-1").mkdir(exist_ok=True)
  res = _train(ckpt, 1000)
  straight = _train(tmp_path / "fresh", 1000)
  assert 0 < res.resumed_from < 1000  # killed mid-run
  np.testing.assert_array_equal(res.losses, straight.losses)
  chex_equal = jax.tree.map(np.array_equal, res.state.params, straight.state.params)
  assert all(jax.tree_util.tree_leaves(chex_equal))
