"""Flow-matching losses and the optax training loop (with EMA and orbax checkpoints)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import _checks, _progress, paths
from memjax import data as data_lib


def fm_loss_per_example(apply_fn, params, x1: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  """Per-example FM loss ``ℓ_b = ||u_θ(x_t, t) − (x1 − x0)||²``, ``x_t = (1 − t) x0 + t x1``.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params: its parameters ``θ``.
    x1: data, ``(B, D)``.
    x0: noise, ``(B, D)``.
    t: times, ``(B,)``.

  Returns:
    ``(B,)`` losses.

  References:
    Lipman et al., "Flow Matching for Generative Modeling", arXiv:2210.02747.
  """
  xt, target = paths.fm_interpolate(x1, x0, t)
  return jnp.sum((apply_fn(params, xt, t) - target) ** 2, axis=-1)


def fm_loss(apply_fn, params, x1, x0, t) -> jax.Array:
  """Monte-Carlo FM loss ``L_FM(θ) = mean_b ||u_θ(x_t, t) − (x1 − x0)||²``.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params: its parameters ``θ``.
    x1: data, ``(B, D)``.
    x0: noise, ``(B, D)``.
    t: times, ``(B,)``.

  Returns:
    Scalar loss.
  """
  return jnp.mean(fm_loss_per_example(apply_fn, params, x1, x0, t))


# ---------------------------------------------------------------------------
# Stochastic objectives: ``loss_fn(params, key) -> scalar``.


def fm_batch(key: jax.Array, data: jax.Array, batch_size: int):
  """A Monte-Carlo triple batch ``(x1, x0, t)``: ``x1 ~ data``, ``x0 ~ N(0, I)``, ``t ~ U[0, 1]``.

  Args:
    key: PRNG key.
    data: training set ``(N, D)``; rows are drawn with replacement.
    batch_size: ``B``.

  Returns:
    ``(x1 (B, D), x0 (B, D), t (B,))``.
  """
  ki, kz, kt = jax.random.split(key, 3)
  x1 = data[jax.random.randint(ki, (batch_size,), 0, data.shape[0])]
  x0 = jax.random.normal(kz, x1.shape, x1.dtype)
  t = jax.random.uniform(kt, (batch_size,), x1.dtype)
  return x1, x0, t


class Objective:
  """A stochastic objective ``loss_fn(params, key) -> ()`` that knows its training data.

  Calling it evaluates the loss; :func:`train` reads :attr:`data_fingerprint` (shape, dtype and
  SHA-256 of the data, :func:`memjax.data.fingerprint`) into the run's fingerprint, so resuming
  a checkpoint with other data is refused, and stores small training sets inline in the
  checkpoint's metadata (:func:`memjax.data.recipe`), so the checkpoint can be audited alone.
  Compared and hashed by identity.

  Attributes:
    fn: the loss ``fn(params, key) -> ()``.
    data: the training points the loss draws from (``(N, D)``; labels are part of the
      fingerprint of a conditional objective).
    data_fingerprint: JSON-able identity of the data (``None`` for traced data).
  """

  def __init__(self, fn: Callable, data, labels=None):
    self.fn = fn
    self.data = data
    fp = None
    if _checks.is_concrete(data) and (labels is None or _checks.is_concrete(labels)):
      fp = data_lib.fingerprint(data)  # (a traced data set has no hash: the run is not tied)
      if labels is not None:
        fp = dict(fp, labels=data_lib.fingerprint(labels))
    self.data_fingerprint = fp

  def __call__(self, params, key):
    return self.fn(params, key)


def fm_objective(apply_fn, data: jax.Array, batch_size: int = 256):
  """The FM objective ``loss_fn(params, key)``: :func:`fm_loss` on a fresh batch drawn with ``key``.

  Integer or bool ``data`` (e.g. uint8 images) is promoted to the default float dtype.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    data: training set ``(N, D)``.
    batch_size: triples per step.

  Returns:
    :class:`Objective` ``loss_fn(params, key) -> ()`` for :func:`train` (it carries the
    data's hash).

  Raises:
    ValueError: if ``data`` is not ``(N, D)`` or holds NaN/inf, or ``batch_size < 1``.
  """
  data = _checks.as_float("data", data)
  _checks.check_ndim("data", data, 2, "(N, D)")
  _checks.check_finite("data", data)
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")

  def loss_fn(params, key):
    return fm_loss(apply_fn, params, *fm_batch(key, data, batch_size))

  return Objective(loss_fn, data)


# ---------------------------------------------------------------------------
# Training loop.


class TrainState(NamedTuple):
  """Everything needed to continue training bit-for-bit.

  Per-step randomness is ``fold_in(key, step)`` of the run's key, so the state holds no key and a
  resumed run draws exactly the batches the original would.

  Attributes:
    step: number of optimiser steps taken (int32 scalar).
    params: current parameters.
    opt_state: the optax state.
    ema_params: exponential moving average of the parameters (``None`` without EMA).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any


class TrainResult(NamedTuple):
  """The outcome of :func:`train`.

  Attributes:
    state: the final :class:`TrainState`.
    losses: ``(num_steps,)`` per-step training loss (restored entries included on resume).
    resumed_from: the step restored from a checkpoint (0 for a fresh run).
  """

  state: TrainState
  losses: np.ndarray  # (num_steps,) per-step training loss
  resumed_from: int  # step restored from a checkpoint (0 if fresh)


def init_state(params, optimizer: optax.GradientTransformation, ema: bool = False) -> TrainState:
  """A fresh :class:`TrainState` at step 0.

  Args:
    params: initial parameters.
    optimizer: the optax transformation.
    ema: keep an EMA copy of the parameters.

  Returns:
    :class:`TrainState`.
  """
  return TrainState(
    jnp.asarray(0, jnp.int32),
    params,
    optimizer.init(params),
    jax.tree.map(jnp.copy, params) if ema else None,
  )


def make_chunk_fn(
  loss_fn, optimizer: optax.GradientTransformation, key: jax.Array, ema_decay: float | None = None
):
  """A jitted ``chunk(state, length) -> (state, losses (length,))``: ``length`` steps in a scan.

  One step: ``θ ← θ + optax_update(∇_θ loss_fn(θ, fold_in(key, step)))`` and, if
  ``ema_decay = d`` is set, ``θ_ema ← d θ_ema + (1 − d) θ``.

  Args:
    loss_fn: ``loss_fn(params, key) -> ()``.
    optimizer: the optax transformation.
    key: the run's PRNG key.
    ema_decay: EMA decay ``d`` (``None``: no EMA).

  Returns:
    ``chunk(state, length)`` with ``length`` static.
  """

  def step(state: TrainState, _):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, jax.random.fold_in(key, state.step))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    return TrainState(state.step + 1, params, opt_state, ema), loss

  @functools.partial(jax.jit, static_argnums=1)
  def chunk(state: TrainState, length: int):
    return jax.lax.scan(step, state, None, length=length)

  return chunk


def _checkpoint_manager(directory: str, max_to_keep: int):
  import orbax.checkpoint as ocp

  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
  )


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be resumed safely (another run's, or nothing intact)."""


def state_checksum(state: TrainState, losses: np.ndarray) -> str:
  """SHA-256 of every leaf's bytes (state and loss history), in tree order.

  Args:
    state: a :class:`TrainState`.
    losses: the loss history.

  Returns:
    Hex digest string.
  """
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves((state, np.asarray(losses))):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(str((arr.dtype.str, arr.shape)).encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def run_fingerprint(params, optimizer_name: str = "", ema: bool = False, extra=None) -> dict:
  """The identity of a run: parameter tree structure, shapes and dtypes, EMA flag and ``extra``.

  Stored with every checkpoint; a resume with a different fingerprint is refused.

  Args:
    params: the parameter pytree.
    optimizer_name: a label of the optimiser.
    ema: whether the run keeps an EMA.
    extra: JSON-able user data (e.g. the experiment config and :func:`data_fingerprint`).

  Returns:
    dict.
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  return {
    "params": str(treedef),
    "shapes": [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in leaves],
    "ema": bool(ema),
    "optimizer": optimizer_name,
    "extra": extra if extra is not None else {},
  }


def data_fingerprint(data) -> dict:
  """Shape, dtype and SHA-256 of a data array (:func:`memjax.data.fingerprint`).

  Args:
    data: array-like.

  Returns:
    dict with ``shape``, ``dtype`` and ``sha256``.
  """
  return data_lib.fingerprint(data)


def save_checkpoint(
  manager,
  state: TrainState,
  losses: np.ndarray,
  metadata: dict | None = None,
  fingerprint: dict | None = None,
):
  """Save ``state``, the loss history, a checksum and the run fingerprint at ``state.step``.

  Saves are asynchronous in orbax; this waits until the step is on disk before returning.

  Args:
    manager: an ``orbax.checkpoint.CheckpointManager``.
    state: the :class:`TrainState`.
    losses: the loss history.
    metadata: JSON-able data stored beside the state.
    fingerprint: the run's :func:`run_fingerprint`.

  Returns:
    ``None``.
  """
  import orbax.checkpoint as ocp

  step = int(state.step)
  losses = np.asarray(losses)
  meta = dict(
    metadata or {},
    step=step,
    checksum=state_checksum(state, losses),
    num_losses=int(losses.shape[0]),
    fingerprint=fingerprint or {},
  )
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave({"state": state, "losses": losses}),
      metadata=ocp.args.JsonSave(_jsonable(meta)),
    ),
  )
  manager.wait_until_finished()


def _jsonable(obj):
  return json.loads(json.dumps(obj, default=str))


def _restore_metadata(manager, step: int) -> dict:
  """The JSON metadata of one step (fingerprint, checksum): readable without the state's shapes."""
  import orbax.checkpoint as ocp

  meta = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata
  if not isinstance(meta, dict) or "checksum" not in meta:
    raise CheckpointError(f"step {step}: metadata without a checksum")
  return meta


def _restore_step(manager, like_state: TrainState, step: int, meta: dict | None = None):
  """``(state, losses, metadata)`` of one step, verified against its stored checksum."""
  import orbax.checkpoint as ocp

  meta = _restore_metadata(manager, step) if meta is None else meta
  abstract = jax.tree.map(
    ocp.utils.to_shape_dtype_struct,
    {"state": like_state, "losses": np.zeros((int(meta["num_losses"]),), np.float32)},
  )
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  state, losses = out.state["state"], np.asarray(out.state["losses"])
  if state_checksum(state, losses) != meta["checksum"]:
    raise CheckpointError(f"step {step}: checksum mismatch (the saved state was altered)")
  return state, losses, meta


def restore_checkpoint(
  manager, like_state: TrainState, num_steps: int | None = None, step: int | None = None
):
  """Restore ``(state, losses)`` of ``step`` (default: the newest), verified by its checksum.

  Args:
    manager: an ``orbax.checkpoint.CheckpointManager``.
    like_state: a :class:`TrainState` with the target structure.
    num_steps: pad (with NaN) or keep ``losses`` to this many entries.
    step: the step to restore (default: the newest).

  Returns:
    ``(state, losses)``.

  Raises:
    CheckpointError: if the step is damaged or fails its checksum.
  """
  step = manager.latest_step() if step is None else step
  state, losses, _ = _restore_step(manager, like_state, step)
  return state, _fit_losses(losses, num_steps)


def _fit_losses(losses, num_steps):
  if num_steps is None or losses.shape[0] == num_steps:
    return losses
  out = np.full((num_steps,), np.nan, np.float32)
  n = min(num_steps, losses.shape[0])
  out[:n] = losses[:n]
  return out


def _fingerprint_diff(stored: dict, current: dict) -> list[str]:
  return [k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]


def _resume(directory, manager, like_state, fingerprint, max_to_keep):
  """Newest intact, matching step of ``directory``: ``(manager, state, losses)`` or ``None``.

  A step that fails to restore or to verify is moved aside to ``corrupt-<step>-<time>`` (never
  deleted), with a warning, and the previous step is tried; a step of a different run (another
  fingerprint) is an error.
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    # The run's identity first, from the JSON metadata alone: a checkpoint of another run
    # (another architecture, optimiser or data) is refused and nothing is moved; only a step
    # that fails to read or to verify is treated as damaged.
    try:
      meta = _restore_metadata(manager, step)
    except CheckpointError as err:
      failures.append(str(err))
      continue
    except Exception as err:  # noqa: BLE001 - orbax/TensorStore/JSON errors of a damaged step
      failures.append(f"step {step}: unreadable metadata ({type(err).__name__}: {str(err)[:200]})")
      continue
    _check_same_run(directory, step, meta.get("fingerprint", {}), fingerprint)
    try:
      state, losses, meta = _restore_step(manager, like_state, step, meta)
    except CheckpointError as err:
      failures.append(str(err))
    except Exception as err:  # noqa: BLE001 - orbax/TensorStore/JSON errors of a damaged step
      failures.append(f"step {step}: unreadable ({type(err).__name__}: {str(err)[:200]})")
    else:
      if failures:
        manager = _set_aside_newer(directory, manager, step, max_to_keep, failures)
      return manager, state, losses
  if failures:
    manager = _set_aside_newer(directory, manager, -1, max_to_keep, failures)
  return None if not failures else (manager, None, None)


def _check_same_run(directory, step, stored: dict, fingerprint: dict) -> None:
  """Refuse a step of another run (:class:`CheckpointError`; nothing is moved)."""
  diff = _fingerprint_diff(stored, fingerprint)
  if "data" in diff and "data" not in stored:  # a checkpoint from before data hashes
    import warnings

    diff.remove("data")
    warnings.warn(
      f"checkpoint_dir {directory!r}: step {step} stores no hash of its training data; "
      "resuming without checking the data.",
      stacklevel=4,
    )
  if "data" in diff:
    raise CheckpointError(
      f"`checkpoint_dir` {directory!r} holds a run trained on other data (step {step}: "
      f"{_short(stored['data'])}; this run: {_short(fingerprint['data'])}); use a new "
      "directory or delete it to start over. Nothing was moved."
    )
  if diff:
    detail = ""
    if "shapes" in diff or "params" in diff:
      detail = " (another parameter tree: its structure, shapes or dtypes differ)"
    raise CheckpointError(
      f"`checkpoint_dir` {directory!r} holds another run (step {step} differs in "
      f"{diff}{detail}); use a new directory or delete it to start over. Nothing was moved."
    )


def _short(fp) -> str:
  fp = fp if isinstance(fp, dict) else {}
  return f"shape {fp.get('shape')}, sha256 {str(fp.get('sha256'))[:12]}…"


def _set_aside_newer(directory, manager, keep_step, max_to_keep, failures):
  import warnings

  stamp = time.strftime("%Y%m%d-%H%M%S")
  moved = []
  for step in sorted(manager.all_steps()):
    if step > keep_step:
      src = os.path.join(os.path.abspath(directory), str(step))
      if os.path.exists(src):
        dst = os.path.join(os.path.abspath(directory), f"corrupt-{step}-{stamp}")
        os.rename(src, dst)
        moved.append(os.path.basename(dst))
  what = f"resuming from step {keep_step}" if keep_step >= 0 else "no intact step: starting fresh"
  warnings.warn(
    f"checkpoint_dir {directory!r}: {'; '.join(failures)}. Moved aside {moved}; {what}.",
    stacklevel=3,
  )
  manager.close()
  return _checkpoint_manager(directory, max_to_keep)


def train(
  loss_fn,
  params,
  optimizer: optax.GradientTransformation,
  num_steps: int,
  key: jax.Array,
  *,
  chunk_size: int = 200,
  ema_decay: float | None = None,
  checkpoint_dir: str | None = None,
  checkpoint_every: int = 1,
  max_to_keep: int = 2,
  progress: bool = True,
  callback: Callable[[TrainState, np.ndarray], None] | None = None,
  metadata: dict | None = None,
  fingerprint: dict | None = None,
) -> TrainResult:
  """Minimise ``loss_fn(params, key)`` for ``num_steps`` optax steps, resumable bit-for-bit.

  Steps run in jitted ``lax.scan`` chunks of ``chunk_size``; a tqdm bar shows progress. With
  ``checkpoint_dir`` the state is saved with orbax every ``checkpoint_every`` chunks and at the
  end, and an existing checkpoint there is resumed from: an interrupted run restarted with the
  same arguments ends with exactly the parameters of an uninterrupted one.

  Checkpoints never lie: each step stores a SHA-256 of the saved state and the run's fingerprint
  (:func:`run_fingerprint` of ``params`` plus ``fingerprint``, e.g. the config, and the hash of
  the training data that an :class:`Objective` such as :func:`fm_objective` carries; a small
  training set is also stored inline in the metadata as a :func:`memjax.data.recipe`, unless
  ``metadata`` holds a ``"data"`` recipe already). On resume a step of another run is refused
  (:class:`CheckpointError`), a step that is unreadable or fails its checksum is moved aside
  (``corrupt-<step>-<time>``, with a warning) and the previous intact step is used, so
  ``max_to_keep`` can never delete the last verified step. A larger ``num_steps`` than the
  finished run extends it; a smaller one than the stored step is an error.

  Args:
    loss_fn: ``loss_fn(params, key) -> ()`` (e.g. :func:`fm_objective`).
    params: initial parameters.
    optimizer: the optax transformation.
    num_steps: total optimiser steps.
    key: the run's PRNG key (step ``i`` uses ``fold_in(key, i)``).
    chunk_size: steps per jitted ``lax.scan`` chunk.
    ema_decay: keep an EMA of the parameters with this decay (``None``: no EMA).
    checkpoint_dir: orbax directory to save to and resume from (``None``: no checkpoints).
    checkpoint_every: save every this many chunks.
    max_to_keep: checkpoints kept.
    progress: show a tqdm bar.
    callback: ``callback(state, losses)`` after each chunk; returning ``True`` stops the run
      (e.g. :class:`HeldoutStopping`).
    metadata: JSON-able data stored with each checkpoint.
    fingerprint: extra identity of the run (see above).

  Returns:
    :class:`TrainResult`.

  Raises:
    ValueError: if ``num_steps`` or ``chunk_size`` is below 1, ``params`` holds NaN/inf, or
      ``num_steps`` is smaller than a stored step.
    CheckpointError: if ``checkpoint_dir`` holds another run's checkpoints (other parameters,
      settings or training data).
    FloatingPointError: if the training loss becomes non-finite.
  """
  if num_steps < 1 or chunk_size < 1:
    raise ValueError(f"`num_steps` and `chunk_size` must be >= 1; got {num_steps}, {chunk_size}.")
  _checks.check_tree_finite("params", params)
  state = init_state(params, optimizer, ema=ema_decay is not None)
  losses = np.full((num_steps,), np.nan, np.float32)
  manager, resumed_from = None, 0
  fp = run_fingerprint(params, type(optimizer).__name__, ema_decay is not None, fingerprint)
  data_fp = getattr(loss_fn, "data_fingerprint", None)
  if data_fp is not None:  # an Objective: the run is tied to its data
    fp["data"] = data_fp
    train_data = getattr(loss_fn, "data", None)
    if "data" not in (metadata or {}) and np.size(train_data) <= data_lib.MAX_INLINE:
      metadata = dict(metadata or {}, data=data_lib.recipe(np.asarray(train_data)))
  if checkpoint_dir is not None:
    manager = _checkpoint_manager(checkpoint_dir, max_to_keep)
    found = _resume(checkpoint_dir, manager, state, fp, max_to_keep)
    if found is not None:
      manager, restored, stored_losses = found
      if restored is not None:
        if int(restored.step) > num_steps:
          manager.close()
          raise CheckpointError(
            f"`checkpoint_dir` {checkpoint_dir!r} holds a run at step {int(restored.step)}, "
            f"beyond `num_steps`={num_steps}; pass num_steps >= {int(restored.step)} (or a "
            "new directory)."
          )
        state, losses = restored, _fit_losses(stored_losses, num_steps)
        resumed_from = int(state.step)
  chunk = make_chunk_fn(loss_fn, optimizer, key, ema_decay)
  bar = _progress.bar(
    total=num_steps, initial=resumed_from, disable=not progress, desc="train", leave=False
  )
  n_chunks = 0
  try:
    while int(state.step) < num_steps:
      start = int(state.step)
      length = min(chunk_size - start % chunk_size, num_steps - start)
      state, chunk_losses = chunk(state, length)
      losses[start : start + length] = np.asarray(chunk_losses)
      n_chunks += 1
      bar.update(length)
      bar.set_postfix(loss=f"{float(np.mean(chunk_losses)):.4g}")
      if not np.all(np.isfinite(chunk_losses)):
        raise FloatingPointError(
          f"non-finite training loss between steps {start} and {start + length}."
        )
      done = int(state.step) >= num_steps
      if manager is not None and (done or n_chunks % checkpoint_every == 0):
        save_checkpoint(manager, state, losses, metadata, fp)
      if callback is not None and callback(state, losses) is True:
        if manager is not None and not done:
          save_checkpoint(manager, state, losses, metadata, fp)
        break
  finally:
    bar.close()
    if manager is not None:
      manager.close()
  return TrainResult(state, losses, resumed_from)


# ---------------------------------------------------------------------------
# Denoising objective for any schedule ``x_t = ψ(t) x + σ(t) ε``.


def sample_times(
  key: jax.Array, schedule: paths.Schedule, n: int, t_min: float = 1e-3, dtype=jnp.float32
):
  """Training times for ``schedule``, shape ``(n,)``.

  VP / VE (data at 0, noise at 1): ``t ~ U[t_min, 1]``; linear FM (data at 1):
  ``t ~ U[0, 1 − t_min]``; EDM: ``ln t ~ N(−1.2, 1.2²)``
  (:func:`memjax.paths.edm_log_normal_times`).

  Args:
    key: PRNG key.
    schedule: the :class:`memjax.paths.Schedule`.
    n: number of times.
    t_min: distance kept from the data end.
    dtype: output dtype.

  Returns:
    ``(n,)`` times.
  """
  if schedule.name == "edm":
    return paths.edm_log_normal_times(key, (n,), dtype=dtype)
  lo, hi = (t_min, 1.0) if schedule.t_data < schedule.t_noise else (0.0, 1.0 - t_min)
  return jax.random.uniform(key, (n,), dtype, lo, hi)


def denoising_target(
  schedule: paths.Schedule, x: jax.Array, eps: jax.Array, t: jax.Array, parameterisation: str
) -> jax.Array:
  """Regression target of the chosen output at ``x_t = ψx + σε``.

  ``eps``: ``ε``; ``score``: ``−ε/σ``; ``x0``: ``x``; ``velocity``: ``ψ'x + σ'ε``.
  :func:`denoising_loss` weights the ``score`` error by ``σ²`` (denoising score matching,
  ``||σ s_θ + ε||²``).

  Args:
    schedule: the :class:`memjax.paths.Schedule`.
    x: clean data, ``(B, D)``.
    eps: noise, ``(B, D)``.
    t: times, ``(B,)``.
    parameterisation: ``"eps"``, ``"score"``, ``"x0"`` or ``"velocity"``.

  Returns:
    ``(B, D)`` targets.

  Raises:
    ValueError: if ``parameterisation`` is unknown.
  """
  tt = t[:, None]
  if parameterisation == "eps":
    return eps
  if parameterisation == "score":
    return -eps / schedule.sigma(tt)
  if parameterisation == "x0":
    return x
  if parameterisation == "velocity":
    return schedule.dpsi(t)[:, None] * x + schedule.dsigma(t)[:, None] * eps
  raise ValueError(
    f"`parameterisation` must be one of {paths.PARAMETERISATIONS}; got {parameterisation!r}."
  )


def denoising_loss(
  apply_fn,
  params,
  schedule: paths.Schedule,
  x: jax.Array,
  eps: jax.Array,
  t: jax.Array,
  parameterisation: str = "eps",
) -> jax.Array:
  """Denoising loss ``L(θ) = mean_b w_b ||f_θ(x_t, t) − target_b||²``, ``x_t = ψ(t) x + σ(t) ε``.

  ``w = σ(t)²`` for the ``score`` output and 1 otherwise. For ``linear_fm`` with ``velocity``
  this is exactly the FM loss.

  Args:
    apply_fn: the network ``f(params, x, t)``.
    params: its parameters ``θ``.
    schedule: the :class:`memjax.paths.Schedule`.
    x: clean data, ``(B, D)``.
    eps: noise, ``(B, D)``.
    t: times, ``(B,)``.
    parameterisation: the network's output (see :func:`denoising_target`).

  Returns:
    Scalar loss.

  References:
    Vincent, "A Connection Between Score Matching and Denoising Autoencoders", Neural Computation
    23 (2011); Ho et al., "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
  """
  target = denoising_target(schedule, x, eps, t, parameterisation)
  xt = schedule.sample(x, eps, t)
  sq = jnp.sum((apply_fn(params, xt, t) - target) ** 2, axis=-1)
  w = schedule.sigma(t) ** 2 if parameterisation == "score" else jnp.ones_like(t)
  return jnp.mean(w * sq)


def denoising_objective(
  apply_fn,
  schedule: paths.Schedule,
  data: jax.Array,
  batch_size: int = 256,
  parameterisation: str = "eps",
  t_min: float = 1e-3,
):
  """The denoising objective ``loss_fn(params, key)`` on fresh ``x ~ data``, ``ε ~ N(0, I)``.

  Times are drawn by :func:`sample_times`; integer ``data`` is promoted to the default float
  dtype.

  Args:
    apply_fn: the network ``f(params, x, t)``.
    schedule: the :class:`memjax.paths.Schedule`.
    data: training set ``(N, D)``.
    batch_size: examples per step.
    parameterisation: the network's output.
    t_min: distance of the training times from the data end.

  Returns:
    ``loss_fn(params, key) -> ()`` for :func:`train`.

  Raises:
    ValueError: if ``data`` is not ``(N, D)`` or holds NaN/inf, ``batch_size < 1``, the
      parameterisation is unknown, or ``t_min`` is not positive.
  """
  data = _checks.as_float("data", data)
  _checks.check_ndim("data", data, 2, "(N, D)")
  _checks.check_finite("data", data)
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
  if parameterisation not in paths.PARAMETERISATIONS:
    raise ValueError(
      f"`parameterisation` must be one of {paths.PARAMETERISATIONS}; got {parameterisation!r}."
    )
  _checks.check_positive("t_min", t_min)

  def loss_fn(params, key):
    ki, kz, kt = jax.random.split(key, 3)
    x = data[jax.random.randint(ki, (batch_size,), 0, data.shape[0])]
    eps = jax.random.normal(kz, x.shape, x.dtype)
    t = sample_times(kt, schedule, batch_size, t_min, x.dtype)
    return denoising_loss(apply_fn, params, schedule, x, eps, t, parameterisation)

  return Objective(loss_fn, data)


# ---------------------------------------------------------------------------
# Class-conditional flow matching with label dropout, and classifier-free guidance.


def cond_fm_objective(
  apply_fn,
  data: jax.Array,
  labels: jax.Array,
  null_label: int,
  batch_size: int = 256,
  p_uncond: float = 0.2,
):
  """Conditional FM objective ``loss_fn(params, key)`` with label dropout.

  ``L(θ) = mean_b ||u_θ(x_t, t, ỹ_b) − (x1_b − x0_b)||²`` with ``(x1_b, y_b)`` drawn jointly from
  ``data`` and ``labels``, and ``ỹ_b = ∅`` (``null_label``) with probability ``p_uncond``, else
  ``y_b``: one network learns ``u(·, c)`` and ``u(·, ∅)``.

  Args:
    apply_fn: the conditional field ``u(params, x, t, y)``.
    data: training set ``(N, D)``.
    labels: integer labels ``(N,)``.
    null_label: the label ``∅``.
    batch_size: examples per step.
    p_uncond: label dropout probability.

  Returns:
    ``loss_fn(params, key) -> ()`` for :func:`train`.

  Raises:
    ValueError: on shape mismatches, NaN/inf data, ``batch_size < 1`` or ``p_uncond`` outside
      ``[0, 1]``.

  References:
    Ho and Salimans, "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
  """
  data = _checks.as_float("data", data)
  _checks.check_ndim("data", data, 2, "(N, D)")
  _checks.check_finite("data", data)
  _checks.check_ndim("labels", labels, 1, "(N,)")
  if labels.shape[0] != data.shape[0]:
    raise ValueError(
      f"`labels` must have shape ({data.shape[0]},) matching `data`; got {labels.shape}."
    )
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
  if not 0 <= p_uncond <= 1:
    raise ValueError(f"`p_uncond` must be in [0, 1]; got {p_uncond}.")
  labels = jnp.asarray(labels, jnp.int32)

  def loss_fn(params, key):
    ki, kz, kt, kd = jax.random.split(key, 4)
    idx = jax.random.randint(ki, (batch_size,), 0, data.shape[0])
    x1, y = data[idx], labels[idx]
    y = jnp.where(jax.random.uniform(kd, (batch_size,)) < p_uncond, null_label, y)
    x0 = jax.random.normal(kz, x1.shape, x1.dtype)
    t = jax.random.uniform(kt, (batch_size,), x1.dtype)
    xt, target = paths.fm_interpolate(x1, x0, t)
    return jnp.mean(jnp.sum((apply_fn(params, xt, t, y) - target) ** 2, axis=-1))

  return Objective(loss_fn, data, labels)


def cfg_velocity(apply_fn, guidance: float, null_label: int):
  """Classifier-free guidance ``u_w(params, x, t, y) = u(x, t, ∅) + w (u(x, t, y) − u(x, t, ∅))``.

  Args:
    apply_fn: the conditional field ``u(params, x, t, y)``.
    guidance: ``w``; ``w = 1`` is the conditional field, ``w = 0`` the unconditional one.
    null_label: the label ``∅``.

  Returns:
    ``u_w(params, x, t, y)``.

  References:
    Ho and Salimans, "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
  """

  def u(params, x, t, y):
    u_null = apply_fn(params, x, t, jnp.full(x.shape[:-1], null_label, jnp.int32))
    return u_null + guidance * (apply_fn(params, x, t, y) - u_null)

  return u


# ---------------------------------------------------------------------------
# Held-out-loss early stopping (the rule used by every experiment that trains "to convergence").


class HeldoutStopping:
  """Stop training when the held-out loss stops improving; keep the best parameters.

  The rule, fixed before any downstream number is looked at: after every chunk the held-out loss
  ``eval_fn(params)`` is computed on the EMA parameters when present (else the raw ones), on a
  FIXED held-out batch (same data, noise and times every time, so the curve is smooth); the
  parameters with the lowest value so far are kept; training stops once ``patience`` consecutive
  evaluations have failed to improve by a relative ``min_rel_improvement`` on the last
  significant improvement. Pass an instance as ``train(..., callback=...)``; read ``best_params``
  afterwards.

  Args:
    eval_fn: ``params -> ()`` held-out loss (e.g. :func:`heldout_fm_loss`).
    patience: evaluations without significant improvement before stopping.
    min_rel_improvement: relative improvement that counts as significant.
    use_ema: evaluate the EMA parameters when the state has them.

  Attributes:
    best_params: parameters at the best held-out loss (``None`` before the first evaluation).
    best_step: the step of the best held-out loss.
    best_loss: the best held-out loss.
    history: ``[(step, held-out loss), ...]``.
    stopped_early: whether the rule fired before ``num_steps``.

  Raises:
    ValueError: if ``patience < 1`` or ``min_rel_improvement`` is outside ``[0, 1)``.
    FloatingPointError: (when called) if the held-out loss is non-finite.
  """

  def __init__(
    self, eval_fn, patience: int = 5, min_rel_improvement: float = 0.005, use_ema: bool = True
  ):
    if not (isinstance(patience, int) and patience >= 1):
      raise ValueError(f"`patience` must be an int >= 1; got {patience!r}.")
    if not 0 <= min_rel_improvement < 1:
      raise ValueError(f"`min_rel_improvement` must be in [0, 1); got {min_rel_improvement}.")
    self.eval_fn = jax.jit(eval_fn)
    self.patience, self.min_rel, self.use_ema = patience, float(min_rel_improvement), use_ema
    self.best_params, self.best_step, self.best_loss = None, -1, np.inf
    self.history: list[tuple[int, float]] = []
    self.stopped_early = False
    self._bad, self._ref = 0, np.inf

  def __call__(self, state: TrainState, losses: np.ndarray) -> bool:
    del losses
    use_ema = self.use_ema and state.ema_params is not None
    params = state.ema_params if use_ema else state.params
    value = float(self.eval_fn(params))
    step = int(state.step)
    self.history.append((step, value))
    if not np.isfinite(value):
      raise FloatingPointError(f"non-finite held-out loss {value} at step {step}.")
    if value < self.best_loss or self.best_params is None:  # keep the lowest, always
      self.best_params, self.best_step, self.best_loss = params, step, value
    if value < self._ref * (1.0 - self.min_rel):  # a significant improvement resets patience
      self._ref, self._bad = value, 0
    else:
      self._bad += 1
    self.stopped_early = self._bad >= self.patience
    return self.stopped_early

  def summary(self) -> dict:
    """Plain numbers for ``results.json``.

    Returns:
      dict with the best step and loss, whether it stopped early and the rule.
    """
    return {
      "best_step": self.best_step,
      "best_heldout_loss": self.best_loss,
      "stopped_early": self.stopped_early,
      "evaluations": len(self.history),
      "rule": f"patience {self.patience}, min relative improvement {self.min_rel}",
    }


def heldout_fm_loss(apply_fn, held_out: jax.Array, key: jax.Array, num: int = 2048):
  """``params -> FM loss`` on a fixed batch of ``num`` triples drawn once from ``held_out``.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    held_out: held-out data ``(M, D)``.
    key: PRNG key of the fixed batch.
    num: triples in the batch.

  Returns:
    ``eval_fn(params) -> ()`` for :class:`HeldoutStopping`.
  """
  x1, x0, t = fm_batch(key, jnp.asarray(held_out), num)
  return lambda params: fm_loss(apply_fn, params, x1, x0, t)


def heldout_denoising_loss(
  apply_fn,
  schedule: paths.Schedule,
  held_out: jax.Array,
  key: jax.Array,
  num: int = 2048,
  parameterisation: str = "eps",
  t_min: float = 1e-3,
):
  """``params -> denoising loss`` (:func:`denoising_loss`) on a fixed held-out batch.

  Args:
    apply_fn: the network ``f(params, x, t)``.
    schedule: the :class:`memjax.paths.Schedule`.
    held_out: held-out data ``(M, D)``.
    key: PRNG key of the fixed batch.
    num: examples in the batch.
    parameterisation: the network's output.
    t_min: distance of the times from the data end.

  Returns:
    ``eval_fn(params) -> ()`` for :class:`HeldoutStopping`.
  """
  held_out = jnp.asarray(held_out)
  k_idx, k_eps, k_t = jax.random.split(key, 3)
  x = held_out[jax.random.randint(k_idx, (num,), 0, held_out.shape[0])]
  eps = jax.random.normal(k_eps, x.shape, x.dtype)
  t = sample_times(k_t, schedule, num, t_min, x.dtype)
  return lambda params: denoising_loss(apply_fn, params, schedule, x, eps, t, parameterisation)
