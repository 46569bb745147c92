"""Pure Flax (linen) vector fields ``apply(params, x, t)``.

A field maps a point ``x`` of shape ``(..., D)`` and a time ``t`` (scalar, or
shape ``(...)`` broadcastable to the batch) to a vector of shape ``(..., D)``.
Parameters are plain pytrees, so fields can be differentiated, vmapped over
parameter sets and flattened with ``jax.flatten_util.ravel_pytree``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

#: A network field ``u(params, x, t) -> (..., D)`` (as :data:`memjax.paths.Field`).
Field = Callable[..., jax.Array]


def sinusoidal_embedding(t: jax.Array, dim: int, max_freq: float = 64.0) -> jax.Array:
  """Sinusoidal embedding of times ``t ∈ [0, 1]``: ``emb(t) = [cos(ω_j t), sin(ω_j t)]_{j<dim/2}``.

  The angular frequencies ``ω_j = max_freq^{j/(dim/2 − 1)}`` are spaced geometrically in
  ``[1, max_freq]``. The top frequency is kept moderate on purpose: the field must be smooth in
  ``t`` for adaptive ODE solvers (and geodesics) to take few steps.

  Args:
    t: times, shape ``(...)``.
    dim: embedding size, even and ``≥ 4``.
    max_freq: the largest angular frequency.

  Returns:
    ``(..., dim)`` embedding.

  Raises:
    ValueError: if ``dim`` is odd or below 4.
  """
  if dim % 2 or dim < 4:
    raise ValueError(f"`dim` must be even and >= 4; got {dim}.")
  half = dim // 2
  dtype = jnp.result_type(t, jnp.float32)
  freqs = max_freq ** (jnp.arange(half, dtype=dtype) / (half - 1))
  args = jnp.asarray(t, dtype)[..., None] * freqs.reshape((1,) * jnp.ndim(t) + (half,))
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class MLPField(nn.Module):
  """MLP vector field with a sinusoidal time embedding.

  ``u(x, t) = W_L σ(… σ(W_1 [x, MLP_t(emb(t))] + b_1) …) + b_L``: the time embedding is passed
  through a small MLP and concatenated to ``x`` (and, with ``time_every_layer``, added to every
  hidden layer).

  Attributes:
    dim: data dimension ``D``.
    hidden: widths of the hidden layers (named ``dense_0``, ``dense_1``, …).
    time_dim: size of the sinusoidal time embedding.
    activation: the nonlinearity ``σ`` (SiLU).
    time_every_layer: also add a projection of the time embedding to every hidden layer after
      the first.
  """

  dim: int
  hidden: Sequence[int] = (64, 64, 64)
  time_dim: int = 32
  activation: Callable[[jax.Array], jax.Array] = nn.silu
  time_every_layer: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])
    temb = sinusoidal_embedding(t, self.time_dim).astype(x.dtype)
    temb = self.activation(nn.Dense(self.time_dim, name="time_dense")(temb))
    h = jnp.concatenate([x, temb], axis=-1)
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, name=f"dense_{i}")(h)
      if self.time_every_layer and i > 0:
        h = h + nn.Dense(width, use_bias=False, name=f"time_proj_{i}")(temb)
      h = self.activation(h)
    return nn.Dense(self.dim, name="out")(h)


def init_params(module: nn.Module, key: jax.Array, dim: int, dtype=jnp.float32):
  """Initialise ``module`` on a dummy ``(1, dim)`` input at ``t = 0.5``.

  Args:
    module: a field module such as :class:`MLPField`.
    key: PRNG key.
    dim: data dimension ``D``.
    dtype: dtype every leaf is cast to.

  Returns:
    The parameter pytree.
  """
  x = jnp.zeros((1, dim), dtype)
  params = module.init(key, x, jnp.full((1,), 0.5, dtype))
  return jax.tree.map(lambda p: p.astype(dtype), params)


def velocity_fn(module: nn.Module) -> Field:
  """The pure field ``u(params, x, t) = module.apply(params, x, t)`` with validated shapes.

  Shapes are checked statically (so this works under ``jit``/``vmap``): ``x`` must be ``(..., D)``
  with ``D == module.dim`` and ``t`` a scalar or of shape ``x.shape[:-1]``.

  Args:
    module: a field module with a ``dim`` attribute (:class:`MLPField`,
      :class:`memjax.unet.UNetField`).

  Returns:
    A :data:`memjax.paths.Field` ``u(params, x, t) -> (..., D)``; calling it raises
    ``ValueError`` naming ``x`` or ``t`` on a wrong shape.
  """
  dim = getattr(module, "dim", None)

  def u(params, x: jax.Array, t) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1:
      raise ValueError("`x` must have shape (..., D); got a scalar.")
    if dim is not None and x.shape[-1] != dim:
      raise ValueError(f"`x` must have shape (..., {dim}); got {x.shape}.")
    t = jnp.asarray(t)
    if t.ndim and t.shape != x.shape[:-1]:
      raise ValueError(
        f"`t` must be a scalar or have shape {x.shape[:-1]} (x.shape[:-1]); got {t.shape}."
      )
    return module.apply(params, x, t)

  return u


def num_params(params) -> int:
  """Total number of scalar parameters in a pytree, ``Σ_leaves size``.

  Args:
    params: a parameter pytree.

  Returns:
    int.
  """
  return int(sum(jnp.size(p) for p in jax.tree_util.tree_leaves(params)))


# ---------------------------------------------------------------------------
# Class-conditional field for classifier-free guidance.


class CondMLPField(nn.Module):
  """Class-conditional MLP field ``u(x, t, y)`` with a learned label embedding.

  Labels ``y ∈ {0, …, num_classes}``: index ``num_classes`` is the reserved "null" label ``∅``
  (unconditional, for classifier-free guidance). The label embedding ``E[y]`` is added to the time
  embedding, so ``u(x, t, y)`` is :class:`MLPField` with ``MLP_t(emb(t)) + E[y]`` as its
  conditioning vector.

  Attributes:
    dim: data dimension ``D``.
    num_classes: number of real labels (the null label is ``num_classes``).
    hidden: widths of the hidden layers.
    time_dim: size of the time (and label) embedding.
    activation: the nonlinearity.

  References:
    Ho and Salimans, "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
  """

  dim: int
  num_classes: int
  hidden: Sequence[int] = (64, 64, 64)
  time_dim: int = 32
  activation: Callable[[jax.Array], jax.Array] = nn.silu

  @property
  def null_label(self) -> int:
    return self.num_classes

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:-1])
    temb = sinusoidal_embedding(t, self.time_dim).astype(x.dtype)
    temb = nn.Dense(self.time_dim, name="time_dense")(temb)
    lemb = nn.Embed(self.num_classes + 1, self.time_dim, name="label_embed")(y).astype(x.dtype)
    cond = self.activation(temb + lemb)
    h = jnp.concatenate([x, cond], axis=-1)
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, name=f"dense_{i}")(h)
      if i > 0:
        h = h + nn.Dense(width, use_bias=False, name=f"cond_proj_{i}")(cond)
      h = self.activation(h)
    return nn.Dense(self.dim, name="out")(h)


def init_cond_params(module: CondMLPField, key: jax.Array, dim: int, dtype=jnp.float32):
  """Initialise a :class:`CondMLPField` on a dummy ``(1, dim)`` input with label 0.

  Args:
    module: the :class:`CondMLPField`.
    key: PRNG key.
    dim: data dimension ``D``.
    dtype: dtype every leaf is cast to.

  Returns:
    The parameter pytree.
  """
  x = jnp.zeros((1, dim), dtype)
  params = module.init(key, x, jnp.full((1,), 0.5, dtype), jnp.zeros((1,), jnp.int32))
  return jax.tree.map(lambda p: p.astype(dtype), params)


def cond_velocity_fn(module: CondMLPField) -> Field:
  """The pure conditional field ``u(params, x (..., D), t, y) -> (..., D)``; ``null_label`` is ∅.

  Args:
    module: a :class:`CondMLPField`.

  Returns:
    ``u(params, x, t, y)`` with ``t`` and the integer labels ``y`` scalars or of shape
    ``x.shape[:-1]``; calling it raises ``ValueError`` naming ``x``, ``t`` or ``y`` on a wrong
    shape.
  """
  dim = module.dim

  def u(params, x: jax.Array, t, y) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != dim:
      raise ValueError(f"`x` must have shape (..., {dim}); got {x.shape}.")
    for name, a in (("t", jnp.asarray(t)), ("y", jnp.asarray(y))):
      if a.ndim and a.shape != x.shape[:-1]:
        raise ValueError(
          f"`{name}` must be a scalar or have shape {x.shape[:-1]} (x.shape[:-1]); got {a.shape}."
        )
    return module.apply(params, x, t, y)

  return u
