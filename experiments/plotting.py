"""Figure pieces shared by the experiments: saving, memorised / not-memorised groups, ROC panels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm

# (name, colour) of the two groups of :func:`memorisation_groups`.
NOT_MEMORISED = ("not memorised", "C0")
MEMORISED = ("memorised", "C1")


def save(fig, path: str, dpi: int = 110, tight: bool | dict = True) -> str:
  """``fig.tight_layout(**tight)`` (``True``: no arguments; ``False``: skipped), save, close."""
  if tight is not False:
    fig.tight_layout(**(tight if isinstance(tight, dict) else {}))
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def memorisation_groups(mem):
  """``(mask, name, colour)`` of the not-memorised and the memorised samples, when non-empty."""
  mem = np.asarray(mem, bool)
  for sel, (name, col) in ((~mem, NOT_MEMORISED), (mem, MEMORISED)):
    if sel.any():
      yield sel, name, col


def roc_points(scores, labels):
  """``(fpr, tpr)`` of a detector (higher score = positive); non-finite scores via nan_to_num."""
  fpr, tpr, _ = skm.roc_curve(
    np.asarray(labels, bool), np.nan_to_num(np.asarray(scores, np.float64))
  )
  return fpr, tpr


def roc_panel(a, scores: dict, labels, title: str) -> None:
  """ROC curves of the detectors ``{name: scores}`` (when both classes occur) and the diagonal."""
  labels = np.asarray(labels, bool)
  if labels.any() and (~labels).any():
    for name, s in scores.items():
      a.plot(*roc_points(s, labels), label=name)
  a.plot([0, 1], [0, 1], "k:", lw=0.8)
  a.set(xlabel="FPR", ylabel="TPR", title=title)
  a.legend(fontsize=7)
