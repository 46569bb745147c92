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
  # A model of two training points copies them (the smoke reads M_1/3 0.73), far more than the
  # 16-point mixture's model does (0.11): the criterion separates the two regimes.
  label = memorisation.c_label(1 / 3)
  two, gmm = (
    res["two_point"]["memorisation"]["M_c"][label],
    res["gmm2d"]["memorisation"]["M_c"][label],
  )
  assert two > 0.5 and two > gmm + 0.3, (two, gmm)
  assert res["two_point"]["solver"]["num_failed"] == res["gmm2d"]["solver"]["num_failed"] == 0
