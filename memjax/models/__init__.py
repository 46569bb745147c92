"""Network architectures of other libraries, rebuilt in Flax with their weights loaded.

:mod:`memjax.models.diffusers_unet`: diffusers' ``UNet2DModel`` (the DDPM family) from a model
folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), with its scheduler as a
:class:`memjax.paths.Schedule`.
"""

from memjax.models import diffusers_unet

__all__ = ["diffusers_unet"]
