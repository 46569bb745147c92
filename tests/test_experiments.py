"""Foundation experiments' :smoke configs run end to end (training, analysis, figure, results.json)."""
import numpy as np

from smoke import run_smoke


def test_fm_toy_smoke(tmp_path):
  res = run_smoke("fm_toy", tmp_path)
  for k in ("two_point", "gmm2d"):
    m = res[k]["memorisation"]["M_c"]
    assert len(m) == len(res["config"]["cs"]) and np.all(np.diff(m) >= 0)
  assert np.isfinite(res["two_point"]["field_error_vs_exact"]["rel_l2"])
