"""A small UNet velocity field on FLATTENED images, as pure Flax (linen).

The field maps ``x`` of shape ``(..., D)`` with ``D = H·W·C`` (a static
``image_shape = (H, W, C)``) and a time ``t`` (scalar or ``x.shape[:-1]``) to ``u(x, t)`` of
shape ``(..., D)``, so it plugs into every ``(B, D)`` routine of memjax (training, sampling,
curvature, Laplace) unchanged: images are reshaped to ``(N, H, W, C)`` inside the module and
flattened again on the way out.

Architecture (``L = len(widths)`` levels)::

  h = conv_in(x)      # 3×3, C -> widths[0]  ("first layer")
  down: level l: num_res_blocks × ResBlock(widths[l]); downsample (stride-2 conv) if l < L−1
  mid:  ResBlock, [self-attention at the lowest resolution], ResBlock
  up:   level l (reversed): num_res_blocks × ResBlock(concat(h, skip));
        upsample (nearest + conv) if l > 0
  out = conv_out(silu(GroupNorm(h)))   # 3×3, widths[0] -> C, zero-initialised

``ResBlock(h, e) = skip(h) + conv(silu(GN(conv(silu(GN(h))) + Dense(e))))`` with the time
embedding ``e = Dense(silu(Dense(emb(t))))`` and ``emb`` the sinusoidal embedding of
:func:`memjax.nets.sinusoidal_embedding`.

The first convolution is named :data:`FIRST_LAYER` (``"conv_in"``), so
``memjax.curvature.param_subset(params, select=FIRST_LAYER_SELECT)`` selects exactly its kernel
and bias (the "first layer only" Bayesian subset).

References:
  Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
  arXiv:1505.04597; Ho et al., "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (the
  diffusion UNet layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax import nets

#: Name of the first convolution (the "first layer only" Bayesian subset).
FIRST_LAYER = "conv_in"
#: The exact leaf-path pattern of :data:`FIRST_LAYER` for :func:`memjax.curvature.param_subset`.
FIRST_LAYER_SELECT = "['conv_in']"


class Conv(nn.Module):
  """2-D convolution ``(N, H, W, Cin) -> (N, ⌈H/s⌉, ⌈W/s⌉, features)`` with ``nn.Conv``'s shapes.

  ``impl="matmul"`` (default) computes ``y[n,h,w] = Σ_{i,j} x_pad[n, s h + i, s w + j] K[i,j] + b``
  as ONE einsum over the ``k_h k_w`` shifted views (im2col, zero "SAME" padding of ``(k−1)/2`` on
  each side). On CPU, XLA runs the gradients of ``lax.conv`` inside while-loops (``lax.scan``
  training, diffrax geodesics) ~30× slower than outside; the matmul form has no such cliff.
  ``impl="lax"`` uses ``nn.Conv`` (faster on accelerators).

  Attributes:
    features: output channels.
    kernel_size: ``(k_h, k_w)``, both odd; kernel ``(k_h, k_w, Cin, features)``, bias
      ``(features,)``.
    strides: ``(s, s)``.
    impl: ``"matmul"`` or ``"lax"``.
    kernel_init: kernel initialiser.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  impl: str = "matmul"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    if self.impl == "lax":
      pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
      return nn.Conv(
        self.features, (kh, kw), (sh, sw), padding=pad, kernel_init=self.kernel_init, name="conv"
      )(x)
    n, h, w, c = x.shape
    kernel = self.param("kernel", self.kernel_init, (kh, kw, c, self.features), x.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    ho, wo = -(-h // sh), -(-w // sw)
    views = [
      xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
      for i in range(kh)
      for j in range(kw)
    ]
    y = jnp.einsum(
      "nhwkc,kco->nhwo", jnp.stack(views, axis=3), kernel.reshape(kh * kw, c, self.features)
    )
    return y + bias.reshape(1, 1, 1, -1)


def _gn(groups: int, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, name=name)


class ResBlock(nn.Module):
  """Residual block (GroupNorm, SiLU, additive time projection), ``(N,H,W,Cin) -> (N,H,W,width)``.

  ``ResBlock(h, e) = skip(h) + conv(silu(GN(conv(silu(GN(h))) + Dense(e))))``; ``skip`` is a 1×1
  convolution when ``Cin ≠ width``.

  Attributes:
    width: output channels.
    groups: GroupNorm groups.
    conv: :class:`Conv` implementation.
  """

  width: int
  groups: int = 8
  conv: str = "matmul"

  @nn.compact
  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    y = Conv(self.width, (3, 3), impl=self.conv, name="conv_0")(
      nn.silu(_gn(self.groups, "norm_0")(h))
    )
    y = y + nn.Dense(self.width, name="time_proj")(emb)[:, None, None, :]
    y = Conv(self.width, (3, 3), impl=self.conv, name="conv_1")(
      nn.silu(_gn(self.groups, "norm_1")(y))
    )
    skip = (
      h if h.shape[-1] == self.width else Conv(self.width, (1, 1), impl=self.conv, name="skip")(h)
    )
    return skip + y


class SelfAttention(nn.Module):
  """Single-head spatial self-attention with a residual connection, ``(N,H,W,C) -> (N,H,W,C)``.

  ``h + W_o softmax(q kᵀ / √C) v`` over the ``H·W`` positions, with ``q, k, v`` linear maps of
  ``GN(h)``.

  Attributes:
    groups: GroupNorm groups.
  """

  groups: int = 8

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    n, hh, ww, c = h.shape
    y = _gn(self.groups, "norm")(h).reshape(n, hh * ww, c)
    q, k, v = (nn.Dense(c, name=f"{s}")(y) for s in ("query", "key", "value"))
    w = jax.nn.softmax(
      jnp.einsum("nic,njc->nij", q, k) / jnp.sqrt(jnp.asarray(c, h.dtype)), axis=-1
    )
    out = nn.Dense(c, name="out")(jnp.einsum("nij,njc->nic", w, v))
    return h + out.reshape(n, hh, ww, c)


class UNetField(nn.Module):
  """UNet velocity field on flattened images ``(..., H·W·C) -> (..., H·W·C)``.

  Attributes:
    image_shape: static ``(H, W, C)``; ``H`` and ``W`` must be divisible by ``2^(len(widths)−1)``.
    widths: channels per resolution level (e.g. ``(32, 64)`` for 8×8 digits).
    num_res_blocks: residual blocks per level on the way down (and up).
    time_dim: size of the sinusoidal time embedding (even, ≥ 4).
    attention: self-attention in the middle (lowest resolution) block.
    groups: GroupNorm groups; must divide every width.
    conv: ``"matmul"`` (im2col; fast gradients inside loops on CPU) or ``"lax"`` (see
      :class:`Conv`).
  """

  image_shape: Sequence[int]
  widths: Sequence[int] = (32, 64)
  num_res_blocks: int = 1
  time_dim: int = 32
  attention: bool = False
  groups: int = 8
  conv: str = "matmul"

  @property
  def dim(self) -> int:
    """Flattened input size ``D = H·W·C``."""
    h, w, c = self.image_shape
    return int(h * w * c)

  def _validate(self):
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f"`image_shape` must be (H, W, C) of positive ints; got {self.image_shape}.")
    if not self.widths or min(self.widths) < 1:
      raise ValueError(
        f"`widths` must be a non-empty sequence of positive ints; got {self.widths}."
      )
    f = 2 ** (len(self.widths) - 1)
    if self.image_shape[0] % f or self.image_shape[1] % f:
      raise ValueError(
        f"`image_shape` {tuple(self.image_shape)}: H and W must be divisible by "
        f"2^(len(widths)-1) = {f}."
      )
    if self.groups < 1 or any(w % self.groups for w in self.widths):
      raise ValueError(
        f"`groups`={self.groups} must divide every width in `widths`={tuple(self.widths)}."
      )
    if self.conv not in ("matmul", "lax"):
      raise ValueError(f"`conv` must be 'matmul' or 'lax'; got {self.conv!r}.")
    if self.num_res_blocks < 1:
      raise ValueError(f"`num_res_blocks` must be >= 1; got {self.num_res_blocks}.")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    self._validate()
    if x.shape[-1] != self.dim:
      raise ValueError(
        f"`x` must have shape (..., {self.dim}) (H·W·C of {tuple(self.image_shape)}); "
        f"got {x.shape}."
      )
    batch = x.shape[:-1]
    h = x.reshape((-1,) + tuple(self.image_shape))
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), batch).reshape(-1)
    emb = nets.sinusoidal_embedding(t, self.time_dim).astype(x.dtype)
    emb = nn.Dense(4 * self.time_dim, name="time_dense_1")(
      nn.silu(nn.Dense(4 * self.time_dim, name="time_dense_0")(emb))
    )
    h = Conv(self.widths[0], (3, 3), impl=self.conv, name=FIRST_LAYER)(h)
    skips = [h]
    for lvl, width in enumerate(self.widths):
      for i in range(self.num_res_blocks):
        h = ResBlock(width, self.groups, self.conv, name=f"down_{lvl}_{i}")(h, emb)
        skips.append(h)
      if lvl < len(self.widths) - 1:
        h = Conv(width, (3, 3), (2, 2), impl=self.conv, name=f"downsample_{lvl}")(h)
        skips.append(h)
    h = ResBlock(self.widths[-1], self.groups, self.conv, name="mid_0")(h, emb)
    if self.attention:
      h = SelfAttention(self.groups, name="mid_attention")(h)
    h = ResBlock(self.widths[-1], self.groups, self.conv, name="mid_1")(h, emb)
    for lvl in reversed(range(len(self.widths))):
      for i in range(self.num_res_blocks + 1):
        h = ResBlock(self.widths[lvl], self.groups, self.conv, name=f"up_{lvl}_{i}")(
          jnp.concatenate([h, skips.pop()], axis=-1), emb
        )
      if lvl > 0:
        n, hh, ww, c = h.shape
        h = jax.image.resize(h, (n, 2 * hh, 2 * ww, c), method="nearest")
        h = Conv(self.widths[lvl - 1], (3, 3), impl=self.conv, name=f"upsample_{lvl}")(h)
    h = nn.silu(_gn(self.groups, "norm_out")(h))
    h = Conv(
      self.image_shape[-1],
      (3, 3),
      impl=self.conv,
      kernel_init=nn.initializers.zeros,
      name="conv_out",
    )(h)
    return h.reshape(batch + (self.dim,))


def unet_field(image_shape: Sequence[int], **kw):
  """Build ``(module, u)`` with ``u(params, x, t)`` the validated pure field of the UNet.

  Args:
    image_shape: ``(H, W, C)``.
    **kw: the other :class:`UNetField` attributes (``widths``, ``num_res_blocks``, ``time_dim``,
      ``attention``, ``groups``, ``conv``).

  Returns:
    ``(module, u)`` with ``u`` from :func:`memjax.nets.velocity_fn`.

  Raises:
    ValueError: if the settings are inconsistent (``H``/``W`` not divisible by
      ``2^(len(widths)−1)``, ``groups`` not dividing every width, unknown ``conv``, …).
  """
  module = UNetField(tuple(int(s) for s in image_shape), **kw)
  module._validate()  # pylint: disable=protected-access
  return module, nets.velocity_fn(module)


def num_params(params) -> int:
  """Number of scalar parameters, ``Σ_leaves size`` (:func:`memjax.nets.num_params`).

  Args:
    params: a parameter pytree.

  Returns:
    int.
  """
  return nets.num_params(params)
