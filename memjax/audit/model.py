"""The model description of an audit: a field, its parameters, its path and its parameterisation.

:class:`Model` is the one thing :func:`memjax.audit.run` needs from a trained network. It holds a
pure field ``apply_fn(params, x (B, D), t (B,)) -> (B, D)`` (with a label argument ``y (B,)``
after ``t`` when the model is class-conditional), its parameters, the
:class:`memjax.paths.Schedule` it was trained on, what the network outputs (``velocity``,
``eps``, ``score`` or ``x0``) and the shape of one data point (``(D,)`` for vectors, ``(H, W, C)``
for images; the field always sees flattened rows). The shapes are checked once, when the model is
built, by :func:`jax.eval_shape` (no FLOPs).

Constructors: :func:`from_function` (any pure ``f(params, x, t)``), :func:`from_linen` (a Flax
linen module and its variables), :func:`from_nnx` (a Flax NNX module, split into a graph
definition and a state) and :func:`from_checkpoint` (an orbax checkpoint written by
:func:`memjax.training.train` plus the experiment config that made it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as py_logging
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, data, nets, paths, training, unet

PARAMETERISATIONS = paths.PARAMETERISATIONS  # ('eps', 'score', 'velocity', 'x0')

# Point shapes of the image data sets the experiments train on (flattened rows in the field).
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


class Conditioning(NamedTuple):
  """How a class-conditional model is sampled and probed.

  The field is ``apply_fn(params, x (B, D), t (B,), y (B,) int)``; label ``null_label`` is the
  unconditional ``∅`` of classifier-free guidance. Generation uses the guided field
  ``u(x, t, ∅) + w (u(x, t, c) − u(x, t, ∅))`` (:func:`memjax.training.cfg_velocity`) with
  ``w = guidance``; the samples' labels are ``labels`` (default: ``0, …, num_classes − 1``
  repeated).
  """

  num_classes: int
  null_label: int
  guidance: float = 1.0
  labels: Any = None  # (N,) ints, or None


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Model:
  """A trained field to audit (compared and hashed by identity, so it is a cheap static key).

  Attributes:
    apply_fn: pure ``apply_fn(params, x (B, D), t (B,)) -> (B, D)``; with ``cond`` it takes the
      labels ``y (B,)`` as a fourth argument.
    params: the parameter pytree passed as the first argument.
    schedule: the :class:`memjax.paths.Schedule` the field was trained on.
    parameterisation: what the field outputs: ``'velocity' | 'eps' | 'score' | 'x0'``.
    data_shape: shape of one data point; ``D = prod(data_shape)``.
    cond: :class:`Conditioning` of a class-conditional model, or ``None``.
    info: free-form description (where the model came from), copied into the report.

  Raises:
    ValueError: on a bad argument, naming it: an unknown ``parameterisation``, a ``schedule``
      that is not a :class:`memjax.paths.Schedule`, a non-positive ``data_shape``, non-finite
      ``params``, or an ``apply_fn`` that fails or returns the wrong shape on ``(2, D)`` inputs.
  """

  apply_fn: Callable
  params: Any
  schedule: paths.Schedule
  parameterisation: str
  data_shape: tuple
  cond: Conditioning | None = None
  info: dict = dataclasses.field(default_factory=dict)

  def __repr__(self) -> str:
    """A one-line summary (never the parameter arrays)."""
    leaves = jax.tree_util.tree_leaves(self.params)
    size = sum(int(np.size(x)) for x in leaves)
    name = self.info.get("module") or getattr(
      self.apply_fn, "__qualname__", type(self.apply_fn).__name__
    )
    cond = "" if self.cond is None else f", conditional ({self.cond.num_classes} classes)"
    return (
      f"Model({name}, {size:,} parameters in {len(leaves)} arrays, data_shape="
      f"{tuple(self.data_shape)}, {self.parameterisation} on {self.schedule.name}{cond})"
    )

  def __post_init__(self):
    if not callable(self.apply_fn):
      raise ValueError(f"`apply_fn` must be callable; got {type(self.apply_fn).__name__}.")
    if not isinstance(self.schedule, paths.Schedule):
      raise ValueError(
        f"`schedule` must be a memjax.paths.Schedule (e.g. memjax.paths.linear_fm()); got "
        f"{type(self.schedule).__name__}."
      )
    if self.parameterisation not in PARAMETERISATIONS:
      raise ValueError(
        f"`parameterisation` must be one of {PARAMETERISATIONS}; got {self.parameterisation!r}."
      )
    shape = tuple(int(s) for s in np.atleast_1d(self.data_shape))
    if not shape or any(s < 1 for s in shape):
      raise ValueError(f"`data_shape` must be a tuple of positive sizes; got {self.data_shape!r}.")
    object.__setattr__(self, "data_shape", shape)
    if self.cond is not None:
      if not isinstance(self.cond, Conditioning):
        raise ValueError(f"`cond` must be a Conditioning or None; got {type(self.cond).__name__}.")
      if self.cond.num_classes < 1 or not 0 <= self.cond.null_label <= self.cond.num_classes:
        raise ValueError(
          f"`cond` must have num_classes >= 1 and 0 <= null_label <= num_classes; got {self.cond}."
        )
      _checks.check_finite("cond.guidance", self.cond.guidance)
    _checks.check_tree_finite("params", self.params)
    self._check_shapes()

  @property
  def dim(self) -> int:
    """``D``, the flattened size of one data point."""
    return int(np.prod(self.data_shape))

  @property
  def is_image(self) -> bool:
    """Whether points are images ``(H, W, C)``."""
    return len(self.data_shape) == 3

  @property
  def dtype(self):
    """The floating dtype of the parameters (the audit computes in it)."""
    leaves = [x for x in jax.tree_util.tree_leaves(self.params) if hasattr(x, "dtype")]
    kinds = [x.dtype for x in leaves if np.dtype(x.dtype).kind == "f"]
    return kinds[0] if kinds else jnp.result_type(float)

  def _check_shapes(self):
    d, dtype = self.dim, self.dtype
    x = jax.ShapeDtypeStruct((2, d), dtype)
    t = jax.ShapeDtypeStruct((2,), dtype)
    args = (self.params, x, t)
    what = f"apply_fn(params, x (2, {d}), t (2,))"
    if self.cond is not None:
      args += (jax.ShapeDtypeStruct((2,), jnp.int32),)
      what = f"apply_fn(params, x (2, {d}), t (2,), y (2,))"
    try:
      out = jax.eval_shape(self.apply_fn, *args)
    except Exception as err:  # noqa: BLE001 - the user's callable failed: say which one
      raise ValueError(
        f"`apply_fn` failed when called as {what} (check `params` and `data_shape`="
        f"{self.data_shape}): {type(err).__name__}: {err}"
      ) from err
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, d):
      raise ValueError(f"`apply_fn` must return shape (2, {d}) when called as {what}; got {shape}.")
    if np.dtype(getattr(out, "dtype", np.float32)).kind != "f":
      raise ValueError(f"`apply_fn` must return floating values; got dtype {out.dtype}.")

  # Derived callables, built once per model so compiled programs keyed by them are reused.

  @functools.cached_property
  def uncond_apply(self) -> paths.Field:
    """``f(params, x (B, D), t (B,))``: ``apply_fn`` itself, or its ``∅`` branch with ``cond``."""
    if self.cond is None:
      return self.apply_fn
    return functools.partial(_null_field, self.apply_fn, self.cond.null_label)

  @functools.cached_property
  def field(self) -> paths.BatchField:
    """Unconditional ``field(x (B, D), t (B,))`` in the model's parameterisation.

    A conditional model is evaluated at ``∅`` (its unconditional branch).
    """
    return functools.partial(self.uncond_apply, self.params)

  @functools.cached_property
  def velocity(self) -> Callable:
    """``u(params, x (B, D), t (B,))`` of the probability-flow ODE (guided with ``cond``).

    With ``cond`` the params are ``(params, labels (B,))`` (labels ride along with the noise so
    that one compiled sampler serves every label).
    """
    if self.cond is None:
      if self.parameterisation == "velocity":
        return self.apply_fn
      return functools.partial(_as_velocity, self.apply_fn, self.schedule, self.parameterisation)
    return functools.partial(
      _guided_velocity,
      self.apply_fn,
      self.schedule,
      self.parameterisation,
      self.cond.null_label,
      float(self.cond.guidance),
    )

  def label_field(self, label: int) -> paths.BatchField:
    """Conditional ``field(x, t)`` at a fixed ``label`` (cached per label)."""
    cache = self.__dict__.setdefault("_label_fields", {})
    if label not in cache:
      cache[label] = functools.partial(_null_field, self.apply_fn, int(label), self.params)
    return cache[label]

  def point_cond(self, dst: str) -> Callable:
    """Per-point conditional ``f(x (D,), t (), c ()) -> (D,)`` in parameterisation ``dst``."""
    cache = self.__dict__.setdefault("_point_cond", {})
    if dst not in cache:
      field = functools.partial(self.apply_fn, self.params)
      cache[dst] = paths.point_cond_fn(field, self.schedule, self.parameterisation, dst)
    return cache[dst]

  def point(self, dst: str, label: int | None = None) -> paths.PointField:
    """Per-point ``f(x (D,), t ()) -> (D,)`` in parameterisation ``dst`` (cached)."""
    cache = self.__dict__.setdefault("_points", {})
    key = (dst, label)
    if key not in cache:
      field = self.field if label is None else self.label_field(label)
      cache[key] = paths.point_fn(field, self.schedule, self.parameterisation, dst)
    return cache[key]

  def describe(self) -> dict:
    """Plain-Python description for the report (no arrays)."""
    return {
      "schedule": self.schedule.name,
      "parameterisation": self.parameterisation,
      "data_shape": list(self.data_shape),
      "dim": self.dim,
      "num_params": nets.num_params(self.params),
      "dtype": str(np.dtype(self.dtype)),
      "conditional": None if self.cond is None else self.cond._replace(labels=None)._asdict(),
      **self.info,
    }


def _null_field(apply_fn, label, params, x, t):  # the field at one fixed label
  return apply_fn(params, x, t, jnp.full(x.shape[:1], label, jnp.int32))


def _as_velocity(apply_fn, schedule, parameterisation, params, x, t):
  return paths.convert(schedule, x, t, apply_fn(params, x, t), parameterisation, "velocity")


def _guided_velocity(apply_fn, schedule, parameterisation, null, guidance, params, x, t):
  params, labels = params
  y = jnp.broadcast_to(labels, x.shape[:1])

  def u(lab):
    out = apply_fn(params, x, t, lab)
    if parameterisation == "velocity":  # no round trip through ε̂ (it divides by ψ = 0 at FM t = 0)
      return out
    return paths.convert(schedule, x, t, out, parameterisation, "velocity")

  base = u(jnp.full(x.shape[:1], null, jnp.int32))
  return base + guidance * (u(y) - base)


# ---------------------------------------------------------------------------
# Constructors.


def from_function(
  fn: Callable,
  params,
  *,
  schedule: paths.Schedule | None = None,
  parameterisation: str = "velocity",
  data_shape: Sequence[int],
  cond: Conditioning | None = None,
  info: dict | None = None,
) -> Model:
  """A :class:`Model` of any pure ``fn(params, x (B, D), t (B,)) -> (B, D)``.

  **Time convention.** memjax's paths put noise at ``t = 0`` and data at ``t = 1`` for linear flow
  matching (``x_t = (1 − t) x0 + t x1``, velocity ``x1 − x0``, :func:`memjax.paths.linear_fm`);
  the diffusion schedules (VP, VE, EDM) put data at ``t = 0``. A velocity model trained with noise
  at ``t = 1`` must be passed as ``lambda p, x, t: -apply(p, x, 1 - t)``; otherwise every solve
  "succeeds" and the samples are meaningless (the report warns when generated samples lie far
  from both the training and the held-out data).

  Args:
    fn: the field (``fn(params, x, t, y)`` with ``cond``).
    params: its parameters (any pytree; ``None`` for a parameter-free field).
    schedule: the path it was trained on (default: linear flow matching, noise at ``t = 0``).
    parameterisation: ``'velocity' | 'eps' | 'score' | 'x0'``.
    data_shape: shape of one data point.
    cond: :class:`Conditioning` of a class-conditional field.
    info: description copied into the report.

  Returns:
    The validated :class:`Model`.
  """
  return Model(
    fn,
    params,
    schedule or paths.linear_fm(),
    parameterisation,
    tuple(data_shape),
    cond,
    dict(info or {}, adapter="function"),
  )


def _linen_apply(module, params, *args):
  return module.apply(params, *args)


def from_linen(module, variables, **kwargs) -> Model:
  """A :class:`Model` of a Flax linen module called as ``module.apply(variables, x, t[, y])``.

  ``kwargs`` are those of :func:`from_function` (``data_shape`` is required). Time convention
  as there: linear flow matching has noise at ``t = 0`` and data at ``t = 1``.
  """
  fn = functools.partial(_linen_apply, module)
  info = dict(kwargs.pop("info", None) or {}, module=type(module).__name__)
  model = from_function(fn, variables, info=info, **kwargs)
  model.info["adapter"] = "linen"
  return model


def _nnx_apply(graphdef, state, *args):
  from flax import nnx

  return nnx.merge(graphdef, state)(*args)


def from_nnx(module, **kwargs) -> Model:
  """A :class:`Model` of a Flax NNX module called as ``module(x, t[, y])``.

  The module is split once (``graphdef, state = nnx.split(module)``); the field is the pure
  ``f(state, x, t) = nnx.merge(graphdef, state)(x, t)``, so the audit never mutates the module.
  ``kwargs`` are those of :func:`from_function` (time convention as there: linear flow matching
  has noise at ``t = 0`` and data at ``t = 1``).
  """
  from flax import nnx

  graphdef, state = nnx.split(module)
  fn = functools.partial(_nnx_apply, graphdef)
  info = dict(kwargs.pop("info", None) or {}, module=type(module).__name__)
  model = from_function(fn, state, info=info, **kwargs)
  model.info["adapter"] = "nnx"
  return model


class Checkpoint(NamedTuple):
  """A verified training checkpoint (from :func:`read_checkpoint`)."""

  params: Any  # the EMA parameters when the run kept them, else the trained parameters
  step: int
  metadata: dict  # the JSON stored beside the state (config, fingerprint, checksum)
  used_ema: bool


def _quiet_read_only(record) -> bool:
  """A logging filter dropping orbax's "Given directory is read only" notice."""
  return not record.getMessage().startswith("Given directory is read only")


def read_checkpoint(directory: str, step: int | None = None, use_ema: bool = True) -> Checkpoint:
  """Restore and verify a checkpoint written by :func:`memjax.training.train`.

  The state is restored as stored (no template), re-assembled as a
  :class:`memjax.training.TrainState` and checked against its SHA-256
  (:func:`memjax.training.state_checksum`).

  Raises:
    ValueError: if ``directory`` holds no checkpoint, ``step`` is absent, or the checkpoint was
      not written by :func:`memjax.training.train` (a plain orbax checkpoint: the message names
      the loaders for it).
    memjax.training.CheckpointError: if the stored state fails its checksum.
  """
  import orbax.checkpoint as ocp

  path = os.path.abspath(directory)
  if not os.path.isdir(path):
    raise ValueError(f"`checkpoint` {directory!r} is not a directory.")
  options = ocp.CheckpointManagerOptions(
    read_only=True, create=False, save_interval_steps=0, max_to_keep=None
  )  # the values read_only implies, so orbax logs no "read_only=True, setting ..." warnings
  absl_logger = py_logging.getLogger("absl")
  absl_logger.addFilter(_quiet_read_only)
  try:  # ... nor "Given directory is read only" (reading is what we asked for)
    manager = ocp.CheckpointManager(path, options=options)
  finally:
    absl_logger.removeFilter(_quiet_read_only)
  try:
    steps = manager.all_steps()
    if not steps:
      raise ValueError(f"`checkpoint` {directory!r} holds no checkpoint step.")
    step = manager.latest_step() if step is None else int(step)
    if step not in steps:
      raise ValueError(f"`step` {step} is not in checkpoint {directory!r} (steps {list(steps)}).")
    try:
      meta = manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
      ).metadata
      out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    except Exception as err:  # noqa: BLE001 - orbax's own errors for a checkpoint of another layout
      raise ValueError(
        f"`checkpoint` {directory!r} is not a memjax.training checkpoint (step {step} has no "
        f"'metadata' and 'state' items: {type(err).__name__}). For parameters saved by other "
        "code use audit.from_linen / audit.from_factory with audit.load_params (or "
        "--config.model.factory and --config.model.params)."
      ) from err
    if not isinstance(meta, dict) or "checksum" not in meta:
      raise ValueError(
        f"`checkpoint` {directory!r} is not a memjax.training checkpoint (its metadata has no "
        "checksum); use audit.from_factory with audit.load_params for other checkpoints."
      )
  finally:
    manager.close()
  raw, losses = out.state["state"], np.asarray(out.state["losses"])
  state = training.TrainState(**{k: raw.get(k) for k in training.TrainState._fields})
  if training.state_checksum(state, losses) != meta.get("checksum"):
    raise training.CheckpointError(f"step {step} of {directory!r}: checksum mismatch.")
  ema = use_ema and state.ema_params is not None
  return Checkpoint(state.ema_params if ema else state.params, int(step), meta, bool(ema))


def _experiment_config(meta: dict, experiment_config):
  if experiment_config is None:
    if "config" not in meta:
      raise ValueError(
        "the checkpoint stores no experiment config; pass `experiment_config` (the "
        "ml_collections config that trained it)."
      )
    experiment_config = meta["config"]
  if hasattr(experiment_config, "to_dict"):
    experiment_config = experiment_config.to_dict()
  return json.loads(json.dumps(experiment_config, default=list))


def architecture(exp: dict, data_shape=None, stored_params=None):
  """``(module, apply_fn, data_shape, init_fn)`` of the network an experiment config describes.

  ``exp["model"]`` with ``widths`` is a :class:`memjax.unet.UNetField` (image shape from
  ``data_shape`` or ``exp["data"]["dataset"]``); with ``hidden`` it is a
  :class:`memjax.nets.MLPField` (``D`` from ``data_shape`` or the bias of the stored output
  layer ``stored_params["params"]["out"]``).
  """
  mc = exp.get("model", {})
  if "widths" in mc:
    if data_shape is None:
      name = exp.get("data", {}).get("dataset", "")
      if name not in IMAGE_SHAPES:
        raise ValueError(f"`data_shape` is required for a UNet trained on {name!r}.")
      data_shape = IMAGE_SHAPES[name]
    module, apply_fn = unet.unet_field(
      tuple(data_shape),
      widths=tuple(mc["widths"]),
      num_res_blocks=mc["num_res_blocks"],
      time_dim=mc["time_dim"],
      attention=mc["attention"],
      groups=mc["groups"],
      conv=mc.get("conv", "matmul"),
    )
  elif "hidden" in mc:
    if data_shape is None:
      try:
        data_shape = tuple(np.shape(stored_params["params"]["out"]["bias"]))
      except (KeyError, TypeError) as err:
        raise ValueError("`data_shape` is required for this MLP checkpoint.") from err
    module = nets.MLPField(
      dim=int(np.prod(data_shape)), hidden=tuple(mc["hidden"]), time_dim=mc["time_dim"]
    )
    apply_fn = nets.velocity_fn(module)
  else:
    raise ValueError(
      "`experiment_config` must have a `model` section with `widths` (UNet) or `hidden` (MLP); "
      f"got keys {sorted(mc)}."
    )
  d = int(np.prod(data_shape))
  init = lambda dtype: jax.eval_shape(
    lambda: nets.init_params(module, jax.random.PRNGKey(0), d, dtype)
  )
  return module, apply_fn, tuple(data_shape), init


def from_checkpoint(
  directory: str,
  experiment_config=None,
  *,
  step: int | None = None,
  use_ema: bool = True,
  data_shape: Sequence[int] | None = None,
  schedule: paths.Schedule | None = None,
  parameterisation: str = "velocity",
) -> Model:
  """A :class:`Model` of a memjax orbax training checkpoint and the config that trained it.

  The network is rebuilt from ``experiment_config["model"]`` (:func:`architecture`; default: the
  config the experiment stored in the checkpoint's metadata), its parameter tree is compared
  with the run fingerprint stored beside the state (:func:`memjax.training.run_fingerprint`),
  and the parameters are restored and checksum-verified (:func:`read_checkpoint`). The
  experiments train by flow matching, hence the defaults (linear FM, velocity).

  Args:
    directory: the ``checkpoint_dir`` of the run (e.g. ``runs/images/<run>/checkpoints``).
    experiment_config: the experiment's ``ml_collections`` config (or its dict); ``None``
      reads it from the checkpoint.
    step: the step to restore (default: the newest).
    use_ema: the EMA parameters when the run kept them.
    data_shape: shape of one point (default: from the config's data set, or the network).
    schedule: the training path (default :func:`memjax.paths.linear_fm`).
    parameterisation: the network's output (default ``'velocity'``).

  Raises:
    ValueError: when the rebuilt network's parameter tree differs from the stored one (the
      config is not the one that trained this checkpoint), or a constructor argument is bad.
  """
  ck = read_checkpoint(directory, step, use_ema)
  exp = _experiment_config(ck.metadata, experiment_config)
  fp = ck.metadata.get("fingerprint", {})
  _, apply_fn, shape, init = architecture(exp, data_shape, ck.params)
  leaves = jax.tree_util.tree_leaves(ck.params)
  like = init(leaves[0].dtype if leaves else jnp.float32)
  want = training.run_fingerprint(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), like))
  if fp and (fp.get("params"), fp.get("shapes")) != (want["params"], want["shapes"]):
    raise ValueError(
      f"`experiment_config` does not describe the network stored in {directory!r}: the rebuilt "
      "parameter tree or shapes differ from the checkpoint's fingerprint."
    )
  like_leaves = jax.tree_util.tree_leaves(like)
  if [tuple(np.shape(x)) for x in leaves] != [tuple(x.shape) for x in like_leaves]:
    raise ValueError(
      f"`experiment_config` does not describe the network stored in {directory!r}: "
      f"{len(like_leaves)} rebuilt parameter arrays against {len(leaves)} stored ones, or other "
      "shapes."
    )
  params = jax.tree_util.tree_unflatten(
    jax.tree_util.tree_structure(like), [jnp.asarray(x) for x in leaves]
  )
  info = {
    "adapter": "checkpoint",
    "checkpoint": os.path.abspath(directory),
    "step": ck.step,
    "ema": ck.used_ema,
  }
  return Model(apply_fn, params, schedule or paths.linear_fm(), parameterisation, shape, None, info)


# ---------------------------------------------------------------------------
# Models from any training loop: a factory, a parameter file, the path from the config.


def load_params(path: str):
  """The parameter pytree stored at ``path`` by any code.

  ``path`` is a ``flax.serialization`` msgpack file (``to_bytes`` / ``msgpack_serialize`` of
  the variables or the params), an orbax checkpoint directory (``StandardCheckpointer`` /
  ``PyTreeCheckpointer`` save of the pytree) or the ``checkpoint_dir`` of
  :func:`memjax.training.train` (its newest step's EMA parameters when kept, checksum-verified).

  Args:
    path: the file or directory.

  Returns:
    The stored pytree (nested dicts of numpy arrays).

  Raises:
    ValueError: if ``path`` does not exist or cannot be read as either format.
  """
  if not isinstance(path, str) or not path:
    raise ValueError(f"`params` must be a path; got {path!r}.")
  if not os.path.exists(path):
    raise ValueError(f"`params` {path!r} does not exist.")
  if os.path.isfile(path):
    from flax import serialization

    with open(path, "rb") as f:
      raw = f.read()
    try:
      return serialization.msgpack_restore(raw)
    except Exception as err:  # noqa: BLE001 - say which file and which format was expected
      raise ValueError(
        f"`params` file {path!r} is not a flax.serialization msgpack file "
        f"({type(err).__name__}: {str(err)[:200]})."
      ) from err
  if any(name.isdigit() for name in os.listdir(path)):  # step folders: a training checkpoint_dir
    return read_checkpoint(path).params
  import orbax.checkpoint as ocp

  try:
    with ocp.StandardCheckpointer() as ckptr:
      return ckptr.restore(os.path.abspath(path))
  except Exception as err:  # noqa: BLE001 - say which directory and which format was expected
    raise ValueError(
      f"`params` directory {path!r} is not an orbax checkpoint of a pytree "
      f"({type(err).__name__}: {str(err)[:200]})."
    ) from err


def _paths_shapes(tree) -> dict:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def fit_params(stored, like, what: str = "`params`"):
  """``stored`` arranged as the template ``like`` (same paths and shapes; dtypes of ``stored``).

  A stored tree of the bare parameters fits a template ``{"params": ...}`` (linen variables).

  Raises:
    ValueError: listing the missing, unexpected and mis-shaped entries.
  """
  want = _paths_shapes(like)
  if isinstance(like, dict) and set(like) == {"params"}:
    if isinstance(stored, dict) and "params" not in stored:
      stored = {"params": stored}
  have = _paths_shapes(stored)
  if want != have:
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [
      f"{k}: stored {have[k]}, model {want[k]}" for k in want if k in have and have[k] != want[k]
    ]
    raise ValueError(
      f"{what} do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}, shapes "
      f"{shapes[:5]} ({len(missing)} missing, {len(extra)} unexpected, {len(shapes)} "
      "mis-shaped)."
    )
  leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(stored)]
  flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
  by_path = dict(zip(_paths_shapes(stored), leaves, strict=True))
  return jax.tree_util.tree_unflatten(
    treedef, [by_path[jax.tree_util.keystr(p)] for p, _ in flat_like]
  )


import_object = data.import_object


def _shaped(data_shape, fn, *args):
  """``fn`` on points of ``data_shape``: rows ``(B, D)`` reshaped in, outputs flattened out."""
  params, x, *rest = args
  out = fn(params, x.reshape(x.shape[:1] + tuple(data_shape)), *rest)
  return out.reshape(out.shape[:1] + (-1,))


def _nnx_call(graphdef, state, x, *rest):
  from flax import nnx

  return nnx.merge(graphdef, state)(x, *rest)


def from_factory(
  factory,
  params_path: str = "",
  *,
  data_shape: Sequence[int],
  schedule: paths.Schedule | None = None,
  parameterisation: str = "velocity",
  info: dict | None = None,
) -> Model:
  """A :class:`Model` of any user network: ``factory()`` and a parameter file.

  Time convention as in :func:`from_function`: linear flow matching has noise at ``t = 0`` and
  data at ``t = 1`` (wrap a model trained the other way round as ``-apply(p, x, 1 - t)``).

  ``factory`` (a callable or ``"MODULE:FUNCTION"``) returns one of

  - a Flax linen module, called ``module.apply(variables, x (B, *data_shape), t (B,))``; the
    variables are read from ``params_path`` and matched against ``module.init``'s shapes;
  - a Flax NNX module, called ``module(x, t)``; its state is replaced by ``params_path`` when
    given (a pure dict of ``nnx.state(module)``), else the module is used as built;
  - a pure function ``f(params, x (B, *data_shape), t (B,))``; ``params`` from ``params_path``
    (``None`` without one).

  The network sees points of ``data_shape`` (images ``(H, W, C)``) and returns the same shape;
  the audit's flattened rows are reshaped around it.

  Args:
    factory: zero-argument callable or ``"MODULE:FUNCTION"``.
    params_path: a msgpack file or orbax directory (:func:`load_params`).
    data_shape: shape of one data point.
    schedule: the path it was trained on (default linear flow matching).
    parameterisation: what it outputs.
    info: description copied into the report.

  Returns:
    The validated :class:`Model`.

  Raises:
    ValueError: on a missing factory or parameter file, parameters that do not fit the module,
      or a network that fails or returns another shape on points of ``data_shape``.
  """
  import flax.linen as nn
  from flax import nnx

  spec = factory if isinstance(factory, str) else getattr(factory, "__qualname__", "factory")
  fn = import_object(factory, "factory") if isinstance(factory, str) else factory
  if not callable(fn):
    raise ValueError(f"`factory` {spec!r} must be callable; got {type(fn).__name__}.")
  net = fn()
  shape = tuple(int(s) for s in data_shape)
  info = dict(
    info or {}, factory=spec, params_file=os.path.abspath(params_path) if params_path else ""
  )
  if isinstance(net, nn.Module):
    if not params_path:
      raise ValueError(f"`params` is required: `factory` {spec!r} returns a linen module.")
    x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    try:
      like = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, t)
    except Exception as err:  # noqa: BLE001 - the user's module failed on the data's shape
      raise ValueError(
        f"`factory` {spec!r}: module.init failed on points of `data_shape` {shape} "
        f"({type(err).__name__}: {str(err)[:300]}); does the model match the data?"
      ) from err
    params = fit_params(load_params(params_path), like, f"`params` {params_path!r}")
    apply = functools.partial(_shaped, shape, functools.partial(_linen_apply, net))
    info["module"], adapter = type(net).__name__, "linen"
  elif isinstance(net, nnx.Module):
    graphdef, state = nnx.split(net)
    if params_path:
      pure = fit_params(
        load_params(params_path), nnx.to_pure_dict(state), f"`params` {params_path!r}"
      )
      nnx.replace_by_pure_dict(state, pure)
    params = state
    apply = functools.partial(_shaped, shape, functools.partial(_nnx_call, graphdef))
    info["module"], adapter = type(net).__name__, "nnx"
  elif callable(net):
    params = load_params(params_path) if params_path else None
    apply = functools.partial(_shaped, shape, net)
    adapter = "function"
  else:
    raise ValueError(
      f"`factory` {spec!r} must return a linen module, an NNX module or a function "
      f"f(params, x, t); got {type(net).__name__}."
    )
  model = Model(apply, params, schedule or paths.linear_fm(), parameterisation, shape, None, info)
  model.info["adapter"] = adapter
  return model


def _diffusers_field(module, data_shape, num_train_timesteps, params, x, t):
  from memjax.models import diffusers_unet

  return diffusers_unet.field(module, data_shape, num_train_timesteps, params, x, t)


def from_diffusers(folder: str, *, data_shape: Sequence[int] | None = None, info=None) -> Model:
  """A :class:`Model` of a diffusers ``UNet2DModel`` folder (e.g. ``google/ddpm-cifar10-32``).

  The network, its weights, its schedule and its output come from the folder
  (:func:`memjax.models.diffusers_unet.load`): ε-prediction (or ``x0``) on DDPM's path of its
  linear ``β`` (exact at the timesteps); the audit's time ``t ∈ [0, 1]`` is the network's
  timestep ``T t − 1``.

  Args:
    folder: the model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).
    data_shape: the training images' shape ``(H, W, C)``, checked against the config's
      ``sample_size`` and ``in_channels`` (default: the config's).
    info: description copied into the report.

  Raises:
    ValueError: for an unreadable folder or unsupported config, or images of another shape.
  """
  from memjax.models import diffusers_unet

  ld = diffusers_unet.load(folder)
  if data_shape is not None and tuple(int(s) for s in data_shape) != ld.data_shape:
    raise ValueError(
      f"the training images have shape {tuple(data_shape)}, the diffusers UNet in {folder!r} "
      f"takes {ld.data_shape} (sample_size, sample_size, in_channels)."
    )
  fn = functools.partial(_diffusers_field, ld.module, ld.data_shape, ld.num_train_timesteps)
  info = dict(info or {}, **ld.info, adapter="diffusers")
  return Model(fn, ld.params, ld.schedule, ld.parameterisation, ld.data_shape, None, info)
