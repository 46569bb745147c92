"""Weight-space curvature set-up: parameter subsets, frozen Monte-Carlo triples, the Laplace loss.

Everything here works on FLAT parameter vectors ``θ ∈ R^P``: a
:class:`ParamSubset` maps between a Flax params pytree and the flat vector
``θ_B`` of its selected ("Bayesian") leaves, with the other leaves frozen.

* :func:`make_triples` — frozen Monte-Carlo triples ``(x1_b, x0_b, t_b)``.
* :class:`CurvatureLoss` + :func:`value` — the deterministic Laplace loss on frozen triples
  ``L(θ_B) = s Σ_b ℓ_b(θ_B, θ_F*) + (α/2)||θ_B||²`` as DATA (a pytree) and ONE module-level
  function of ``(apply_fn, θ_B, data)``; :class:`Loss` binds a network as a hashable callable
  and :func:`curvature_loss` / :func:`bind` give the closure view.
* :func:`curvature_residual_fn` — its residuals, for Gauss–Newton products
  (:func:`memjax.linalg.ggn_vp`).

Products, Lanczos and traces live in :mod:`memjax.linalg`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from memjax import _checks, paths, training

Array = jax.Array


# ---------------------------------------------------------------------------
# Parameter subsets.


@jax.tree_util.register_pytree_node_class
class ParamSubset:
  """A selection of leaves of a params pytree, the rest frozen at fixed values.

  ``flatten(params) -> θ_B`` concatenates the selected leaves (``ravel_pytree`` order);
  ``merge(θ_B) -> params`` puts them back into the frozen pytree. It is a pytree itself (children:
  the frozen leaves), so it can be passed to ``jit``. Build it with :func:`param_subset`. The
  property ``frozen`` is the full params pytree supplying the unselected (frozen) values.

  The full params pytree supplying the unselected (frozen) values is the property ``frozen``.

  Attributes:
    mask: tuple of Python bools, one per leaf (tree-flatten order).
    names: tuple of leaf path strings (``jax.tree_util.keystr``).
  """

  def __init__(self, frozen, mask: Sequence[bool], names: Sequence[str]):
    leaves, treedef = jax.tree_util.tree_flatten(frozen)
    self._leaves = tuple(leaves)
    self._treedef = treedef
    self.mask = tuple(bool(m) for m in mask)
    self.names = tuple(names)

  @property
  def frozen(self):
    """The full params pytree supplying the unselected (frozen) values."""
    return jax.tree_util.tree_unflatten(self._treedef, self._leaves)

  # The children are the frozen leaves as stored (never re-flattened), so transformations that
  # replace leaves by None or sentinels (equinox's partition/combine, diffrax's checks) round-trip.
  def tree_flatten(self):
    return self._leaves, (self._treedef, self.mask, self.names)

  @classmethod
  def tree_unflatten(cls, aux, children):
    obj = object.__new__(cls)
    obj._leaves = tuple(children)
    obj._treedef, obj.mask, obj.names = aux
    return obj

  def _selected(self, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if treedef != self._treedef:
      raise ValueError(
        "`params` must have the same tree structure as the params the subset was built "
        f"from; got {treedef}."
      )
    return [leaf for leaf, m in zip(leaves, self.mask) if m]

  @property
  def selected_names(self) -> tuple[str, ...]:
    """Path strings of the selected leaves."""
    return tuple(n for n, m in zip(self.names, self.mask) if m)

  @property
  def size(self) -> int:
    """Number ``P_B`` of scalar parameters in the subset."""
    return int(sum(np.size(x) for x in self._selected(self.frozen)))

  @property
  def theta(self) -> Array:
    """``θ_B`` at the frozen values, ``(P_B,)``."""
    return self.flatten(self.frozen)

  def flatten(self, params) -> Array:
    """Selected leaves of ``params`` as one flat vector ``θ_B`` ``(P_B,)``.

    Args:
      params: a pytree with the structure of ``frozen``.

    Returns:
      ``(P_B,)``.

    Raises:
      ValueError: if ``params`` has another tree structure.
    """
    return ravel_pytree(self._selected(params))[0]

  def merge(self, theta_b: Array):
    """Full params pytree with the selected leaves taken from ``theta_b``.

    Args:
      theta_b: ``θ_B``, ``(P_B,)``.

    Returns:
      The params pytree (unselected leaves from ``frozen``).

    Raises:
      ValueError: if ``theta_b`` is not ``(P_B,)``.
    """
    _checks.check_ndim("theta_b", theta_b, 1, "(P_B,)")
    sel, unravel = ravel_pytree([x for x, m in zip(self._leaves, self.mask) if m])
    _checks.check_last_dim("theta_b", theta_b, sel.shape[0], "(P_B,)")
    new_sel = iter(unravel(theta_b))
    out = [next(new_sel) if m else leaf for leaf, m in zip(self._leaves, self.mask)]
    return jax.tree_util.tree_unflatten(self._treedef, out)


def param_subset(params, select: Any = None) -> ParamSubset:
  """Select the Bayesian subset ``θ_B`` of ``params``; the rest is frozen at ``params``.

  Args:
    params: params pytree (e.g. a Flax ``{"params": ...}`` dict).
    select: ``None`` (all leaves); a string or a sequence of strings — a leaf is
      selected if any string is a substring of its path
      ``jax.tree_util.keystr(path)``, e.g. ``"['params']['dense_0']['kernel']"``
      (so ``"dense_0"`` also matches ``"dense_01"``; pass ``"['dense_0']"`` to be
      exact); a callable ``(path_str, leaf) -> bool``; or a pytree of Python
      bools with the structure of ``params``.

  Returns:
    A :class:`ParamSubset`.

  Raises:
    ValueError: if nothing is selected or a mask has the wrong structure.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = tuple(jax.tree_util.keystr(p) for p, _ in flat)
  leaves = [x for _, x in flat]
  if select is None:
    mask = [True] * len(leaves)
  elif isinstance(select, str) or (
    isinstance(select, (list, tuple)) and select and all(isinstance(s, str) for s in select)
  ):
    pats = (select,) if isinstance(select, str) else tuple(select)
    mask = [any(p in n for p in pats) for n in names]
  elif callable(select):
    mask = [bool(select(n, x)) for n, x in zip(names, leaves)]
  else:
    m_leaves, m_def = jax.tree_util.tree_flatten(select)
    if m_def != treedef:
      raise ValueError(
        "`select` given as a mask must have the tree structure of `params`; "
        f"got {m_def}, expected {treedef}."
      )
    mask = [bool(m) for m in m_leaves]
  if not any(mask):
    raise ValueError(f"`select`={select!r} selects no leaf of `params`; leaf paths are {names}.")
  return ParamSubset(params, mask, names)


# ---------------------------------------------------------------------------
# The deterministic curvature loss on frozen Monte-Carlo triples.


def make_triples(key: Array, data: Array, num: int) -> tuple[Array, Array, Array]:
  """Draw frozen Monte-Carlo triples ``(x1_b, x0_b, t_b)``, ``b = 1..B``, of the curvature loss.

  ``x1_b`` uniformly from the rows of ``data`` (without replacement when ``num ≤ N``),
  ``x0_b ~ N(0, I)``, ``t_b ~ U[0, 1]``.

  Args:
    key: PRNG key.
    data: training set ``(N, D)``.
    num: number of triples ``B``.

  Returns:
    ``x1 (B, D)``, ``x0 (B, D)``, ``t (B,)``.

  Raises:
    ValueError: if ``data`` is not ``(N, D)`` or holds NaN/inf, or ``num`` is not positive.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199.
  """
  _checks.check_ndim("data", data, 2, "(N, D)")
  _checks.check_finite("data", data)
  _checks.check_positive("num", num)
  n = data.shape[0]
  k_idx, k_x0, k_t = jax.random.split(key, 3)
  idx = jax.random.choice(k_idx, n, (num,), replace=num > n)
  x1 = data[idx]
  x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
  t = jax.random.uniform(k_t, (num,), x1.dtype)
  return x1, x0, t


def _check_triples(x1, x0, t):
  _checks.check_ndim("x1", x1, 2, "(B, D)")
  if np.shape(x0) != np.shape(x1):
    raise ValueError(f"`x0` must have shape (B, D) = {np.shape(x1)} like `x1`; got {np.shape(x0)}.")
  if np.shape(t) != np.shape(x1)[:1]:
    raise ValueError(f"`t` must have shape (B,) = {np.shape(x1)[:1]}; got {np.shape(t)}.")
  for name, x in (("x1", x1), ("x0", x0), ("t", t)):
    _checks.check_finite(name, x)


def _subset_or_all(params_map, subset):
  """The subset's selection, with the frozen leaves taken from ``params_map``."""
  if subset is None:
    return param_subset(params_map, None)
  if jax.tree_util.tree_structure(params_map) != jax.tree_util.tree_structure(subset.frozen):
    raise ValueError(
      "`subset` was built from params with a different tree structure than `params_map`."
    )
  return ParamSubset(params_map, subset.mask, subset.names)


class CurvatureLoss(NamedTuple):
  """The Laplace loss as DATA: everything :func:`value` needs besides the network ``apply_fn``.

  ``L(θ_B) = s Σ_b ℓ_b(merge(θ_B)) + (α/2)||θ_B||² − g₀ᵀ(θ_B − θ₀)``, with
  ``ℓ_b = ||u_θ(x_t,b, t_b) − (x1_b − x0_b)||²`` on the frozen triples. The last term is the tilt
  (:func:`memjax.laplace.tilt`; ``g₀ = 0`` when untilted). With ``theta_lin`` set, the network is
  linearised in its weights at ``θ_lin``: ``ℓ_b = ||r_b(θ_lin) + J_b(θ_lin)(θ_B − θ_lin)||²``
  (Bergamin et al.'s linearised manifold).

  A pytree (every field is traced under ``jit``; the subset's leaf selection is static), so a new
  seed, new triples, a new ``α``, a tilt or a new ``θ*`` at the same shapes reuse every compiled
  weight-space program: the jitted cores take ``(apply_fn static, data traced)``. Build it with
  :func:`curvature_data`; change it with ``_replace`` (or :func:`memjax.laplace.tilt` /
  :func:`memjax.laplace.with_prior`).

  Attributes:
    subset: the :class:`ParamSubset` (its frozen leaves are the MAP's).
    x1: triple data points ``(B, D)``.
    x0: triple noise ``(B, D)``.
    t: triple times ``(B,)``.
    alpha: prior precision ``α ≥ 0`` (scalar array).
    loss_scale: the data-term scale ``s`` (scalar array).
    tilt_grad: ``g₀``, ``(P_B,)`` (zeros: no tilt).
    tilt_point: ``θ₀``, ``(P_B,)``.
    theta_lin: linearisation point ``(P_B,)``, or ``None`` for the network itself.
  """

  subset: ParamSubset
  x1: Array
  x0: Array
  t: Array
  alpha: Array
  loss_scale: Array
  tilt_grad: Array
  tilt_point: Array
  theta_lin: Array | None = None

  @property
  def triples(self) -> tuple[Array, Array, Array]:
    """The frozen triples ``(x1, x0, t)``."""
    return self.x1, self.x0, self.t


def curvature_data(
  params_map,
  x1: Array,
  x0: Array,
  t: Array,
  *,
  subset: ParamSubset | None = None,
  alpha,
  loss_scale=None,
  num_data: int | None = None,
) -> CurvatureLoss:
  """Validate the pieces of the Laplace loss and pack them as a :class:`CurvatureLoss`.

  The scale ``s`` defaults to ``N/B`` (``num_data / B``), making ``s Σ_b ℓ_b`` an unbiased
  estimate of the full-data sum ``Σ_n E_{x0,t} ℓ``; ``s = 1/B`` gives the papers' mean
  ``L_FM``. The metric ``G = I + ∇L∇Lᵀ`` used for Riemannian sampling is NOT invariant to
  rescaling ``L``, so ``s`` changes the geodesics and must be chosen deliberately.

  Args:
    params_map: MAP params pytree; unselected leaves are frozen at these values.
    x1: triple data points ``(B, D)`` (see :func:`make_triples`).
    x0: triple noise ``(B, D)``.
    t: triple times ``(B,)``.
    subset: a :class:`ParamSubset` (``None``: all parameters); only its selection is used, the
      frozen leaves always come from ``params_map``.
    alpha: prior precision ``α ≥ 0``.
    loss_scale: ``s``; if ``None``, ``num_data / B``.
    num_data: ``N``, required when ``loss_scale`` is ``None``.

  Returns:
    :class:`CurvatureLoss` (untilted, not linearised), scalars in the dtype of ``x1``.

  Raises:
    ValueError: for triples of inconsistent shapes or with NaN/inf, ``alpha < 0`` or not finite,
      a non-finite ``loss_scale``, or ``num_data`` missing or not positive with
      ``loss_scale=None``.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199.
  """
  _check_triples(x1, x0, t)
  _checks.check_finite("alpha", alpha)
  if _checks.is_concrete(alpha) and not np.all(np.asarray(alpha) >= 0):
    raise ValueError(f"`alpha` must be >= 0; got {alpha}.")
  if loss_scale is None:
    if num_data is None:
      raise ValueError("`num_data` (N) is required when `loss_scale` is None (default s = N/B).")
    _checks.check_positive("num_data", num_data)
    loss_scale = num_data / np.shape(x1)[0]
  _checks.check_finite("loss_scale", loss_scale)
  subset = _subset_or_all(params_map, subset)
  theta = subset.theta
  dtype = jnp.result_type(x1)
  zeros = jnp.zeros_like(theta)
  return CurvatureLoss(
    subset,
    x1,
    x0,
    t,
    jnp.asarray(alpha, dtype),
    jnp.asarray(loss_scale, dtype),
    zeros,
    zeros,
  )


def residuals(apply_fn, theta_b: Array, data: CurvatureLoss) -> Array:
  """Residuals ``r_b(θ_B) = u_θ(x_t,b, t_b) − (x1_b − x0_b)`` of the frozen triples, ``(B, D)``.

  Args:
    apply_fn: ``u(params, x, t)``.
    theta_b: ``θ_B``, ``(P_B,)``.
    data: the :class:`CurvatureLoss` (its subset and triples are used).

  Returns:
    ``(B, D)``.
  """
  return _residuals(apply_fn, data.subset, data.x1, data.x0, data.t, theta_b)


def _residuals(apply_fn, subset, x1, x0, t, theta_b):
  xt, target = paths.fm_interpolate(x1, x0, t)
  return apply_fn(subset.merge(theta_b), xt, t) - target


def value(apply_fn, theta_b: Array, data: CurvatureLoss) -> Array:
  """The Laplace loss ``L(θ_B)`` described by ``data`` (see :class:`CurvatureLoss`).

  ONE module-level function of ``(apply_fn, θ_B, data)``: jitted weight-space code passes
  ``apply_fn`` static and ``data`` traced, so it compiles once per network and shapes.

  Args:
    apply_fn: ``u(params, x, t)``.
    theta_b: ``θ_B``, ``(P_B,)``.
    data: :class:`CurvatureLoss`.

  Returns:
    the scalar loss ``()``.
  """
  if data.theta_lin is None:
    merged = data.subset.merge(theta_b)
    fit = jnp.sum(training.fm_loss_per_example(apply_fn, merged, data.x1, data.x0, data.t))
  else:
    r0, jd = jax.jvp(
      lambda th: residuals(apply_fn, th, data), (data.theta_lin,), (theta_b - data.theta_lin,)
    )
    fit = jnp.sum((r0 + jd) ** 2)
  prior = 0.5 * data.alpha * jnp.sum(theta_b**2)
  return data.loss_scale * fit + prior - jnp.dot(data.tilt_grad, theta_b - data.tilt_point)


@dataclasses.dataclass(frozen=True)
class Loss:
  """``L(θ_B, data) = value(apply_fn, θ_B, data)`` as a hashable callable of one network.

  Two ``Loss`` objects of the same ``apply_fn`` are equal, so a jitted function taking it as a
  static argument compiles once per network, whatever the data. Pass it, with the
  :class:`CurvatureLoss` as ``args``, to :func:`memjax.laplace.riemannian`,
  :func:`memjax.laplace.fit_eigenpairs` or :func:`memjax.laplace.refine_map`.

  Attributes:
    apply_fn: ``u(params, x, t)``.
  """

  apply_fn: Callable

  def __call__(self, theta_b: Array, data: CurvatureLoss) -> Array:
    return value(self.apply_fn, theta_b, data)


def bind(apply_fn, data: CurvatureLoss) -> Callable[[Array], Array]:
  """The closure view ``θ_B -> value(apply_fn, θ_B, data)`` of a loss, for users who want one.

  Jitting this closure compiles a program per closure; the weight-space library code never does
  (it passes :class:`Loss` and ``data`` separately).

  Args:
    apply_fn: ``u(params, x, t)``.
    data: :class:`CurvatureLoss`.

  Returns:
    ``loss_fn(θ_B)``: ``(P_B,) -> ()``.
  """
  return functools.partial(_bound_value, Loss(apply_fn), data)


def _bound_value(loss, data, theta_b):
  return loss(theta_b, data)


def curvature_loss(
  apply_fn,
  params_map,
  x1: Array,
  x0: Array,
  t: Array,
  *,
  subset: ParamSubset | None = None,
  alpha,
  loss_scale=None,
  num_data: int | None = None,
) -> Callable[[Array], Array]:
  """The Laplace loss on frozen triples as a closure, ``L(θ_B) = s Σ_b ℓ_b + (α/2)||θ_B||²``.

  The closure view of :func:`curvature_data` + :func:`value` (see there for ``s`` and the
  arguments); library code passes the data as a pytree instead.

  Args:
    apply_fn: ``u(params, x, t)``.
    params_map: MAP params pytree; unselected leaves are frozen at these values.
    x1: triple data points ``(B, D)`` (see :func:`make_triples`).
    x0: triple noise ``(B, D)``.
    t: triple times ``(B,)``.
    subset: a :class:`ParamSubset` (``None``: all parameters).
    alpha: prior precision ``α ≥ 0``.
    loss_scale: ``s``; if ``None``, ``num_data / B``.
    num_data: ``N``, required when ``loss_scale`` is ``None``.

  Returns:
    ``loss_fn(θ_B)``: ``(P_B,) -> ()``.

  Raises:
    ValueError: as :func:`curvature_data`.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199.
  """
  data = curvature_data(
    params_map, x1, x0, t, subset=subset, alpha=alpha, loss_scale=loss_scale, num_data=num_data
  )
  return bind(apply_fn, data)


def curvature_residual_fn(
  apply_fn, params_map, x1: Array, x0: Array, t: Array, *, subset: ParamSubset | None = None
) -> Callable[[Array], Array]:
  """Residuals ``r_b(θ_B) = u_θ(x_t,b, t_b) − (x1_b − x0_b)``, ``(P_B,) -> (B, D)``.

  With these, the data term of :func:`curvature_loss` is ``s Σ_b ||r_b||²`` and its GGN product
  is ``ggn_vp(residual_fn, θ, v, s) + α v`` (:func:`memjax.linalg.ggn_vp`).

  Args:
    apply_fn: ``u(params, x, t)``.
    params_map: MAP params pytree.
    x1: triple data points ``(B, D)``.
    x0: triple noise ``(B, D)``.
    t: triple times ``(B,)``.
    subset: a :class:`ParamSubset` (``None``: all parameters).

  Returns:
    ``residual_fn(θ_B) -> (B, D)``.
  """
  _check_triples(x1, x0, t)
  subset = _subset_or_all(params_map, subset)

  return functools.partial(_residuals, apply_fn, subset, x1, x0, t)


@jax.jit
def merge_stack(subset: ParamSubset, thetas: Array):
  """Full params pytrees of a stack of flat subset parameters, leaves with a leading axis ``S``.

  Compiled once per subset structure and shapes (the subset's frozen leaves are traced), so the
  posterior models of every fit, seed or η merge with the same program.

  Args:
    subset: a :class:`ParamSubset`.
    thetas: ``(S, P_B)``.

  Returns:
    the params pytree with every leaf stacked ``(S, ...)`` (unselected leaves broadcast).
  """
  return jax.vmap(subset.merge)(thetas)
