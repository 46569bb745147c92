"""A memorisation audit of any trained field: one model, four lenses, one report.

Describe the network once (:class:`Model`, or :func:`from_checkpoint`, :func:`from_linen`,
:func:`from_nnx`, :func:`from_function`, :func:`from_factory` for any network and a parameter
file, :func:`from_diffusers` for a diffusers DDPM UNet folder), then :func:`run` it against its
training set: every generated sample gets its nearest-neighbour ratio, FLIPD and LID*, an MMH
label, sharpness scores (and Wen's guidance norm for class-conditional models), the training set
gets its noise regimes, and optionally the weights get a Laplace posterior; the summary says which
detector would have found the memorised samples. :func:`memjax.audit.report.write` (or the
``memjax-audit`` command) turns the result into ``report.html``, ``samples.csv`` and
``summary.json``.
"""

from memjax.audit import configs, lenses, model, report, sources, toy
from memjax.audit.lenses import AuditReport, run
from memjax.audit.model import (
  Conditioning,
  Model,
  from_checkpoint,
  from_diffusers,
  from_factory,
  from_function,
  from_linen,
  from_nnx,
  load_params,
  read_checkpoint,
)

__all__ = [
  "AuditReport",
  "Conditioning",
  "Model",
  "configs",
  "from_checkpoint",
  "from_diffusers",
  "from_factory",
  "from_function",
  "from_linen",
  "from_nnx",
  "lenses",
  "load_params",
  "model",
  "read_checkpoint",
  "report",
  "run",
  "sources",
  "toy",
]
