"""fm_toy's :smoke config end to end (training, analysis, figure, results.json)."""

import numpy as np
from smoke import run_smoke

from memjax import memorisation


def test_fm_toy_smoke(tmp_path):
  res = run_smoke("fm_toy", tmp_path)
  cs = res["config"]["eval"]["cs"]
  for k in ("two_point", "gmm2d"):
    m = res[k]["memorisation"]["M_c"]
    assert len(m) == len(cs)
    assert np.all(np.diff([m[memorisation.c_label(c)] for c in sorted(cs)]) >= 0)
  assert np.isfinite(res["two_point"]["field_error_vs_exact"]["rel_l2"])
