"""The diffusers ``UNet2DModel`` (the DDPM family) in Flax linen, loaded from a diffusers folder.

The architecture of Ho et al.'s DDPM as diffusers builds it from ``config.json``: a sinusoidal
timestep embedding (``flip_sin_to_cos``, ``freq_shift``) and a two-layer MLP, ``conv_in``, down
blocks of ResNet blocks (GroupNorm → SiLU → conv, the time embedding added between the two
convolutions, a 1×1 shortcut when the width changes) with self-attention after each ResNet block
in ``AttnDownBlock2D`` and a stride-2 conv between levels, a middle block (ResNet, attention,
ResNet), up blocks that concatenate the skip activations, then GroupNorm → SiLU → ``conv_out``.
Images are ``(B, H, W, C)`` here (diffusers: ``(B, C, H, W)``).

:func:`load` reads ``config.json`` and ``diffusion_pytorch_model.safetensors`` (numpy only: no
torch) into the Flax parameter tree, and the scheduler config into a
:class:`memjax.paths.Schedule` (:func:`schedule_from_config`): DDPM's linear ``β`` exactly at its
timesteps, timestep ``n`` at time ``t = (n + 1)/T`` (data at ``t = 0``, noise at ``t = 1``).
:func:`field` is the audit's pure ``f(params, x (B, D), t (B,))``: ε-prediction
(``prediction_type="epsilon"``) or ``x0`` (``"sample"``).

Parity with diffusers' own PyTorch forward is tested on committed fixtures (tiny random configs,
``benchmarks/diffusers_parity.py``).

References:
  Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memjax import paths

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONFIG_FILE = "config.json"
SCHEDULER_FILE = "scheduler_config.json"

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
# prediction_type of the scheduler → memjax parameterisation.
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0"}


class UNetConfig(NamedTuple):
  """The ``UNet2DModel`` settings this implementation supports (see :func:`config_from_dict`)."""

  sample_size: int = 32
  in_channels: int = 3
  out_channels: int = 3
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  down_block_types: tuple = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
  up_block_types: tuple = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
  block_out_channels: tuple = (224, 448, 672, 896)
  layers_per_block: int = 2
  mid_block_scale_factor: float = 1.0
  downsample_padding: int = 1
  attention_head_dim: int | None = 8
  norm_num_groups: int = 32
  attn_norm_num_groups: int | None = None
  norm_eps: float = 1e-5
  add_attention: bool = True
  has_mid_block: bool = True


# Settings whose other values this implementation does not build (value accepted → message).
_FIXED = {
  "time_embedding_type": ("positional",),
  "act_fn": ("silu", "swish"),
  "resnet_time_scale_shift": ("default",),
  "downsample_type": ("conv",),
  "upsample_type": ("conv",),
  "class_embed_type": (None,),
  "num_class_embeds": (None,),
}


def config_from_dict(cfg: dict) -> UNetConfig:
  """The :class:`UNetConfig` of a diffusers ``config.json`` dict, checked.

  Raises:
    ValueError: for another class than ``UNet2DModel`` or a setting this implementation does not
      build (naming it and the supported values).
  """
  cls = cfg.get("_class_name", "UNet2DModel")
  if cls != "UNet2DModel":
    raise ValueError(f"`config.json` describes a {cls!r}; only 'UNet2DModel' is supported.")
  for key, allowed in _FIXED.items():
    if cfg.get(key, allowed[0]) not in allowed:
      raise ValueError(f"UNet2DModel `{key}`={cfg[key]!r} is not supported (only {allowed}).")
  for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
    bad = [b for b in cfg.get(key, ()) if b not in allowed]
    if bad:
      raise ValueError(f"UNet2DModel `{key}` {bad} are not supported (only {allowed}).")
  mid = cfg.get("mid_block_type", "UNetMidBlock2D")
  if mid not in ("UNetMidBlock2D", None):
    raise ValueError(f"UNet2DModel `mid_block_type`={mid!r} is not supported.")
  fields = {k: cfg[k] for k in UNetConfig._fields if k in cfg}
  for k in ("down_block_types", "up_block_types", "block_out_channels"):
    if k in fields:
      fields[k] = tuple(fields[k])
  if isinstance(fields.get("sample_size"), list | tuple):
    sizes = set(fields["sample_size"])
    if len(sizes) != 1:
      raise ValueError(f"UNet2DModel `sample_size` {cfg['sample_size']} must be square.")
    fields["sample_size"] = sizes.pop()
  out = UNetConfig(**fields)._replace(has_mid_block=mid is not None)
  n = len(out.block_out_channels)
  if len(out.down_block_types) != n or len(out.up_block_types) != n:
    raise ValueError(
      "UNet2DModel needs as many `down_block_types` and `up_block_types` as "
      f"`block_out_channels`; got {len(out.down_block_types)}, {len(out.up_block_types)}, {n}."
    )
  return out


def timestep_embedding(
  timesteps: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period=10000.0
) -> jax.Array:
  """Sinusoidal embedding ``[sin(n ω_k), cos(n ω_k)]`` with ``ω_k = max_period^{−k/(dim/2 − s)}``.

  ``k = 0 … dim/2 − 1``, ``s = freq_shift``; ``flip_sin_to_cos`` puts the cosines first; an odd
  ``dim`` is padded with one zero (diffusers' ``get_timestep_embedding``).

  Args:
    timesteps: ``(B,)`` (float) timesteps ``n``.
    dim: embedding width.
    flip_sin_to_cos: cosines first.
    freq_shift: ``s``.
    max_period: the longest period.

  Returns:
    ``(B, dim)`` float32.
  """
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  arg = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], -1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], -1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _norm(groups, eps, name):
  return nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False, name=name)


def _conv(features, name, kernel=3, stride=1, padding=1):
  pad = padding if isinstance(padding, tuple) else ((padding, padding), (padding, padding))
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=pad, name=name)


class ResnetBlock(nn.Module):
  """``h = conv2(SiLU(GN(conv1(SiLU(GN(x))) + W SiLU(emb)))); (shortcut(x) + h) / scale``."""

  out_channels: int
  groups: int
  eps: float
  output_scale_factor: float = 1.0

  @nn.compact
  def __call__(self, x, emb):
    h = nn.silu(_norm(self.groups, self.eps, "norm1")(x))
    h = _conv(self.out_channels, "conv1")(h)
    h = h + nn.Dense(self.out_channels, name="time_emb_proj")(nn.silu(emb))[:, None, None, :]
    h = nn.silu(_norm(self.groups, self.eps, "norm2")(h))
    h = _conv(self.out_channels, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, "conv_shortcut", kernel=1, padding=0)(x)
    return (x + h) / self.output_scale_factor


class AttentionBlock(nn.Module):
  """Spatial self-attention ``(x + W_o softmax(Q Kᵀ/√d) V) / scale`` on ``GN(x)``, per head."""

  heads: int
  groups: int | None
  eps: float
  rescale_output_factor: float = 1.0

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = _norm(self.groups, self.eps, "group_norm")(x) if self.groups else x
    h = h.reshape(b, hgt * wid, c)
    inner = (c // self.heads) * self.heads
    split = lambda a: a.reshape(b, hgt * wid, self.heads, inner // self.heads)
    q = split(nn.Dense(inner, name="to_q")(h))
    k = split(nn.Dense(inner, name="to_k")(h))
    v = split(nn.Dense(inner, name="to_v")(h))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(inner // self.heads)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    out = nn.Dense(c, name="to_out_0")(out.reshape(b, hgt * wid, inner))
    return (out.reshape(b, hgt, wid, c) + x) / self.rescale_output_factor


class UNet2D(nn.Module):
  """diffusers' ``UNet2DModel`` forward: ``ε̂ = UNet(x (B, H, W, C), n (B,))``."""

  config: UNetConfig

  @nn.compact
  def __call__(self, x, timesteps):
    c = self.config
    groups, eps, chans = c.norm_num_groups, c.norm_eps, c.block_out_channels
    if c.center_input_sample:
      x = 2 * x - 1.0
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), x.shape[:1])
    t_emb = timestep_embedding(timesteps, chans[0], c.flip_sin_to_cos, c.freq_shift)
    emb = nn.Dense(4 * chans[0], name="linear_1")(t_emb.astype(x.dtype))
    emb = nn.Dense(4 * chans[0], name="linear_2")(nn.silu(emb))
    h = _conv(chans[0], "conv_in")(x)
    skips = [h]
    for i, kind in enumerate(c.down_block_types):
      head_dim = c.attention_head_dim or chans[i]
      for j in range(c.layers_per_block):
        h = ResnetBlock(chans[i], groups, eps, name=f"down_blocks_{i}_resnets_{j}")(h, emb)
        if kind == "AttnDownBlock2D":
          name = f"down_blocks_{i}_attentions_{j}"
          h = AttentionBlock(chans[i] // head_dim, groups, eps, name=name)(h)
        skips.append(h)
      if i < len(chans) - 1:
        pad = c.downsample_padding
        h = _conv(
          chans[i],
          f"down_blocks_{i}_downsamplers_0_conv",
          stride=2,
          padding=((0, 1), (0, 1)) if pad == 0 else pad,
        )(h)
        skips.append(h)
    if c.has_mid_block:
      scale = c.mid_block_scale_factor
      h = ResnetBlock(chans[-1], groups, eps, scale, name="mid_block_resnets_0")(h, emb)
      if c.add_attention:
        head_dim = c.attention_head_dim or chans[-1]
        h = AttentionBlock(
          chans[-1] // head_dim,
          c.attn_norm_num_groups or groups,
          eps,
          scale,
          name="mid_block_attentions_0",
        )(h)
      h = ResnetBlock(chans[-1], groups, eps, scale, name="mid_block_resnets_1")(h, emb)
    rev = tuple(reversed(chans))
    for i, kind in enumerate(c.up_block_types):
      head_dim = c.attention_head_dim or rev[i]
      for j in range(c.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], -1)
        h = ResnetBlock(rev[i], groups, eps, name=f"up_blocks_{i}_resnets_{j}")(h, emb)
        if kind == "AttnUpBlock2D":
          h = AttentionBlock(rev[i] // head_dim, groups, eps, name=f"up_blocks_{i}_attentions_{j}")(
            h
          )
      if i < len(rev) - 1:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour ×2
        h = _conv(rev[i], f"up_blocks_{i}_upsamplers_0_conv")(h)
    h = nn.silu(_norm(groups, eps, "conv_norm_out")(h))
    return _conv(c.out_channels, "conv_out")(h)


# ---------------------------------------------------------------------------
# Weights: diffusers' state-dict names → the Flax tree above.

# Old attention names (checkpoints saved before diffusers' Attention rewrite, e.g. the DDPM hub
# models) → current ones.
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _flax_path(key: str):
  """The Flax module path of :class:`UNet2D` and the tensor's name of a diffusers key, e.g.
  ``(["down_blocks_0_resnets_1", "norm1"], "weight")`` of ``down_blocks.0.resnets.1.norm1.weight``.
  """
  *mods, tensor = key.split(".")
  if len(mods) >= 2 and mods[-1] in _OLD_ATTENTION and "attentions" in mods:
    mods = mods[:-1] + _OLD_ATTENTION[mods[-1]].split(".")
  if mods and mods[0] == "time_embedding":
    mods = mods[1:]
  if mods and mods[0] in ("down_blocks", "up_blocks"):
    head, rest = mods[:4], mods[4:]
    if head[2] in ("downsamplers", "upsamplers"):  # one conv, named conv (or Conv2d_0)
      return ["_".join(head) + "_conv"], tensor
  elif mods and mods[0] == "mid_block":
    head, rest = mods[:3], mods[3:]
  else:
    head, rest = mods, []
  names = ["_".join(head)] + (["_".join(rest)] if rest else [])
  return names, tensor


def _to_flax(tensor, value):
  """The Flax leaf name and array of one diffusers tensor (conv OIHW → HWIO, linear transposed)."""
  if tensor == "bias":
    return "bias", value
  if value.ndim == 4:
    return "kernel", np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return "kernel", value.T
  return "scale", value  # GroupNorm weight


def convert_state_dict(state: dict) -> dict:
  """The Flax ``{"params": ...}`` of a diffusers ``UNet2DModel`` state dict (numpy arrays)."""
  params: dict = {}
  seen = set()
  for key in sorted(state):
    names, tensor = _flax_path(key)
    leaf, value = _to_flax(tensor, np.asarray(state[key], np.float32))
    path = tuple(names) + (leaf,)
    if path in seen:  # the same tensor under two names (Downsample2D's conv / Conv2d_0)
      continue
    seen.add(path)
    node = params
    for n in names:
      node = node.setdefault(n, {})
    node[leaf] = value
  return {"params": params}


# ---------------------------------------------------------------------------
# Loading a folder.


class Loaded(NamedTuple):
  """A diffusers UNet loaded for memjax."""

  module: UNet2D
  params: dict  # {"params": ...}
  config: UNetConfig
  schedule: paths.Schedule
  parameterisation: str  # "eps" or "x0"
  num_train_timesteps: int
  data_shape: tuple  # (H, W, C)
  info: dict


def _find(folder: str, name: str, subfolder: str) -> str | None:
  for cand in (os.path.join(folder, name), os.path.join(folder, subfolder, name)):
    if os.path.isfile(cand):
      return cand
  return None


@functools.cache  # one Schedule object per setting, so compiled programs are reused
def schedule_from_config(
  num_train_timesteps: int = 1000,
  beta_start: float = 1e-4,
  beta_end: float = 2e-2,
  beta_schedule: str = "linear",
) -> paths.Schedule:
  """DDPM's discrete schedule as a :class:`memjax.paths.Schedule`, exact at its timesteps.

  ``β_n = β_start + (β_end − β_start) n/(T − 1)``, ``ᾱ_n = Π_{i ≤ n} (1 − β_i)``,
  ``x_n = √ᾱ_n x + √(1 − ᾱ_n) ε``. Timestep ``n`` sits at ``t_n = (n + 1)/T`` (so ``t = 0`` is
  the clean data, ``ᾱ = 1``); between timesteps ``log ᾱ`` is interpolated linearly:
  ``ψ(t) = exp(½ log ᾱ(tT − 1))``, ``σ(t) = √(1 − ψ(t)²)``. The network's timestep at ``t`` is
  ``n = T t − 1`` (:func:`field`). Data at ``t = 0``, noise at ``t = 1``.

  Raises:
    ValueError: for another ``beta_schedule`` than ``"linear"`` or bad settings.
  """
  if beta_schedule != "linear":
    raise ValueError(
      f"scheduler `beta_schedule`={beta_schedule!r} is not supported (only 'linear')."
    )
  if not (num_train_timesteps > 1 and 0 < beta_start < beta_end < 1):
    raise ValueError(
      "scheduler needs num_train_timesteps > 1 and 0 < beta_start < beta_end < 1; got "
      f"{num_train_timesteps}, {beta_start}, {beta_end}."
    )
  betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
  log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])  # at t = 0, 1/T, …, 1
  grid = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps

  def log_psi(t):
    t = jnp.asarray(t)
    dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.result_type(float)
    return 0.5 * jnp.interp(t, jnp.asarray(grid, dtype), jnp.asarray(log_abar, dtype))

  return paths.Schedule(
    "ddpm_linear",
    psi=lambda t: jnp.exp(log_psi(t)),
    sigma=lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_psi(t))),
    t_noise=1.0,
    t_data=0.0,
  )


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def load(folder: str, dtype=jnp.float32) -> Loaded:
  """A diffusers ``UNet2DModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
  optionally ``scheduler_config.json``; or a pipeline folder with ``unet/`` and ``scheduler/``).

  Without a scheduler config the DDPM defaults are used (``T = 1000``, ``β`` from 1e-4 to 0.02,
  ε-prediction) and ``info["scheduler"]`` says so.

  Args:
    folder: the model folder (downloaded by the user, e.g. ``google/ddpm-cifar10-32``).
    dtype: parameter dtype.

  Returns:
    :class:`Loaded`.

  Raises:
    ValueError: for a missing folder, config or weights file (a ``.bin`` only: convert it to
      safetensors), an unsupported setting, or weights that do not fit the config.
  """
  if not os.path.isdir(folder):
    raise ValueError(f"`folder` {folder!r} is not a directory.")
  cfg_path = _find(folder, CONFIG_FILE, "unet")
  if cfg_path is None:
    raise ValueError(f"`folder` {folder!r} holds no {CONFIG_FILE} (nor unet/{CONFIG_FILE}).")
  weights = os.path.join(os.path.dirname(cfg_path), WEIGHTS_FILE)
  if not os.path.isfile(weights):
    bins = [f for f in os.listdir(os.path.dirname(cfg_path)) if f.endswith(".bin")]
    hint = (
      f" It holds {bins}: convert them once with torch and safetensors "
      "(safetensors.torch.save_file(torch.load(path), '" + WEIGHTS_FILE + "'))."
      if bins
      else ""
    )
    raise ValueError(f"`folder` {folder!r} holds no {WEIGHTS_FILE}.{hint}")
  config = config_from_dict(_read_json(cfg_path))
  from safetensors.numpy import load_file

  params = convert_state_dict(load_file(weights))
  module = UNet2D(config)
  shape = (config.sample_size, config.sample_size, config.in_channels)
  like = jax.eval_shape(
    module.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape, dtype), jnp.zeros((1,), dtype)
  )
  flat_like = {
    jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(like)
  }
  flat_have = {
    jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)
  }
  if flat_like != flat_have:
    missing = sorted(set(flat_like) - set(flat_have))
    extra = sorted(set(flat_have) - set(flat_like))
    shapes = [k for k in flat_like if k in flat_have and flat_like[k] != flat_have[k]]
    raise ValueError(
      f"the weights in {weights!r} do not fit its config.json: missing {missing[:4]}, "
      f"unexpected {extra[:4]}, mis-shaped {shapes[:4]}."
    )
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
  sched_path = _find(folder, SCHEDULER_FILE, "scheduler")
  sched = _read_json(sched_path) if sched_path else {}
  pred = sched.get("prediction_type", "epsilon")
  if pred not in PREDICTION_TYPES:
    raise ValueError(
      f"scheduler `prediction_type`={pred!r} is not supported (only {sorted(PREDICTION_TYPES)})."
    )
  t_steps = int(sched.get("num_train_timesteps", 1000))
  schedule = schedule_from_config(
    t_steps,
    float(sched.get("beta_start", 1e-4)),
    float(sched.get("beta_end", 2e-2)),
    str(sched.get("beta_schedule", "linear")),
  )
  info = {
    "diffusers_folder": os.path.abspath(folder),
    "scheduler": sched_path or "none found: DDPM defaults (T=1000, linear beta 1e-4..0.02, eps)",
    "num_train_timesteps": t_steps,
  }
  return Loaded(module, params, config, schedule, PREDICTION_TYPES[pred], t_steps, shape, info)


@functools.partial(jax.jit, static_argnums=0)
def apply(module: UNet2D, params, x, timesteps):
  """Jitted ``module.apply(params, x (B, H, W, C), timesteps (B,))`` (diffusers' timestep units:
  ``0 … T − 1``); compiled once per module and input shapes."""
  return module.apply(params, x, timesteps)


def field(module: UNet2D, data_shape: tuple, num_train_timesteps: int, params, x, t):
  """The audit's ``f(params, x (B, D), t (B,))``: timestep ``n = T t − 1`` (on the path of
  :func:`schedule_from_config`), flattened rows."""
  img = x.reshape(x.shape[:1] + tuple(data_shape))
  out = module.apply(params, img, num_train_timesteps * t - 1.0)
  return out.reshape(x.shape)
