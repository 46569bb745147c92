"""Progress bars that stay readable in log files.

On a terminal, a normal tqdm bar. Elsewhere (a log file, CI, a notebook's captured stderr), tqdm's
carriage-return redraws would fill the file with one line per update; there the bar prints a plain
line at most every ``LOG_INTERVAL`` seconds (and once at the end).
"""

from __future__ import annotations

import sys

import tqdm

LOG_INTERVAL = 30.0


def bar(**kwargs) -> tqdm.tqdm:
  """``tqdm.tqdm(**kwargs)``, with sparse updates when stderr is not a terminal."""
  stream = kwargs.get("file") or sys.stderr
  if not getattr(stream, "isatty", lambda: False)():
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    kwargs.setdefault("maxinterval", LOG_INTERVAL * 4)
    kwargs.setdefault("ascii", True)
  return tqdm.tqdm(**kwargs)
