"""Fixtures for the parity of memjax.models.diffusers_unet with diffusers' own PyTorch forward.

Builds tiny random ``UNet2DModel`` configs with diffusers (torch CPU), perturbs every parameter
(so GroupNorm scales, biases and zero-initialised output convs are all exercised), saves each
model folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` + a DDPM
``scheduler_config.json``) and the inputs and outputs of diffusers' forward (float32) under
``tests/fixtures/diffusers/<name>/``; ``tests/test_diffusers_unet.py`` compares memjax's forward
with them, without torch. Needs the optional peers::

  .venv/bin/pip install -r benchmarks/requirements-peers.txt
  python -m benchmarks.diffusers_parity            # rewrites the fixtures
  python -m benchmarks.diffusers_parity --check    # also runs memjax's forward and prints errors
  python -m benchmarks.diffusers_parity --ddpm-cifar10   # the full DDPM CIFAR-10 architecture
                                                         # (random weights in a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "diffusers")

# Tiny configs covering the architecture's options: attention with several heads and with one
# (attention_head_dim None, as google/ddpm-cifar10-32), DDPM's downsample padding 0 and
# flip_sin_to_cos False / freq_shift 1, a mid-block scale factor, 1 and 3 channels.
CONFIGS = {
  "attn_8x8_grey": dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(4, 8),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=2,
    norm_num_groups=2,
    flip_sin_to_cos=True,
    freq_shift=0,
  ),
  "ddpm_like_8x8_rgb": dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=(4, 4, 8),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_num_groups=2,
    norm_eps=1e-6,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1.4142135623730951,
  ),
  "no_attn_16x16_rgb": dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(4, 8),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    add_attention=False,
    norm_num_groups=2,
    flip_sin_to_cos=True,
    freq_shift=0,
  ),
}
TIMESTEPS = (0.0, 17.0, 411.5, 999.0)

# The architecture of google/ddpm-cifar10-32 (its config.json; 35.7M parameters).
DDPM_CIFAR10 = dict(
  sample_size=32,
  in_channels=3,
  out_channels=3,
  block_out_channels=(128, 256, 256, 256),
  layers_per_block=2,
  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
  attention_head_dim=None,
  norm_eps=1e-6,
  norm_num_groups=32,
  downsample_padding=0,
  flip_sin_to_cos=False,
  freq_shift=1,
)


def make(name: str, cfg: dict, seed: int) -> str:
  import torch
  from diffusers import DDPMScheduler, UNet2DModel

  torch.manual_seed(seed)
  model = UNet2DModel(**cfg).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  folder = os.path.join(OUT, name)
  model.save_pretrained(folder, safe_serialization=True)
  DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder)
  c, s = cfg["in_channels"], cfg["sample_size"]
  x = torch.randn(len(TIMESTEPS), c, s, s)
  t = torch.tensor(TIMESTEPS)
  with torch.no_grad():
    out = model(x, t).sample
  np.savez(
    os.path.join(folder, "io.npz"),
    x=x.permute(0, 2, 3, 1).numpy(),  # NHWC, as memjax takes images
    t=t.numpy(),
    out=out.permute(0, 2, 3, 1).numpy(),
  )
  return folder


def check(folder: str) -> float:
  """Max |memjax − diffusers| / max |diffusers| on the stored inputs."""
  from memjax.models import diffusers_unet

  m = diffusers_unet.load(folder)
  io = np.load(os.path.join(folder, "io.npz"))
  got = np.asarray(diffusers_unet.apply(m.module, m.params, io["x"], io["t"]))
  return float(np.max(np.abs(got - io["out"])) / np.max(np.abs(io["out"])))


def ddpm_cifar10() -> dict:
  """The DDPM CIFAR-10 architecture with random weights: parameter counts and the forward error."""
  import tempfile

  import jax
  import torch
  from diffusers import UNet2DModel

  from memjax.models import diffusers_unet

  torch.manual_seed(0)
  model = UNet2DModel(**DDPM_CIFAR10).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 900.0])
  with torch.no_grad():
    ref = model(x, t).sample.permute(0, 2, 3, 1).numpy()
  with tempfile.TemporaryDirectory() as folder:
    model.save_pretrained(folder, safe_serialization=True)
    ld = diffusers_unet.load(folder)
  got = np.asarray(
    diffusers_unet.apply(ld.module, ld.params, x.permute(0, 2, 3, 1).numpy(), t.numpy())
  )
  return {
    "params_diffusers": sum(p.numel() for p in model.parameters()),
    "params_memjax": sum(a.size for a in jax.tree_util.tree_leaves(ld.params)),
    "max_relative_error": float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))),
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--check", action="store_true", help="also compare memjax's forward")
  ap.add_argument("--ddpm-cifar10", action="store_true", help="check the full DDPM architecture")
  args = ap.parse_args()
  if args.ddpm_cifar10:
    print(json.dumps(ddpm_cifar10()))
    return
  sizes = {}
  for i, (name, cfg) in enumerate(CONFIGS.items()):
    folder = make(name, cfg, seed=i)
    sizes[name] = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    line = f"{name}: {sizes[name] / 1024:.0f} kB"
    if args.check:
      line += f", max relative error {check(folder):.2e}"
    print(line)
  print(json.dumps({"total_kB": round(sum(sizes.values()) / 1024)}))


if __name__ == "__main__":
  main()
