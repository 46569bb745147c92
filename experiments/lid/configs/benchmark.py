"""Config of ``experiments/lid/benchmark.py``; variants ``""`` (default), ``smoke`` and ``large``.

``large`` is the ``--size=large`` run: every manifold of scikit-dimension's
``BenchmarkManifolds`` (intrinsic dimension 1 to 70, ambient dimension 3 to 96), sized for a GPU.
"""

import ml_collections

from experiments import configs_common as cc
from experiments.lid import fitting

# Every manifold of skdim.datasets.BenchmarkManifolds, in its own order: (name, d, D).
ALL = (
  ("M1_Sphere", 10, 11),
  ("M2_Affine_3to5", 3, 5),
  ("M3_Nonlinear_4to6", 4, 6),
  ("M4_Nonlinear", 4, 8),
  ("M5a_Helix1d", 1, 3),
  ("M5b_Helix2d", 2, 3),
  ("M6_Nonlinear", 6, 36),
  ("M7_Roll", 2, 3),
  ("M8_Nonlinear", 12, 72),
  ("M9_Affine", 20, 20),
  ("M10a_Cubic", 10, 11),
  ("M10b_Cubic", 17, 18),
  ("M10c_Cubic", 24, 25),
  ("M10d_Cubic", 70, 71),
  ("M11_Moebius", 2, 3),
  ("M12_Norm", 20, 20),
  ("M13a_Scurve", 2, 3),
  ("M13b_Spiral", 1, 13),
  ("Mbeta", 10, 40),
  ("Mn1_Nonlinear", 18, 72),
  ("Mn2_Nonlinear", 24, 96),
  ("Mp1_Paraboloid", 3, 12),
  ("Mp2_Paraboloid", 6, 21),
  ("Mp3_Paraboloid", 9, 30),
)

# The default selection: 12 manifolds, d from 1 to 10, D from 3 to 36 (two with exact scores).
DEFAULT = (
  "M5a_Helix1d",
  "M13b_Spiral",
  "M7_Roll",
  "M11_Moebius",
  "M2_Affine_3to5",
  "Mp1_Paraboloid",
  "M3_Nonlinear_4to6",
  "M4_Nonlinear",
  "Mp2_Paraboloid",
  "M6_Nonlinear",
  "M1_Sphere",
  "M10a_Cubic",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "smoke", "large"))
  c = cc.base(progress=False)
  c.cache_dir = ""  # trained models (orbax); "" = <workdir>/models. A rerun reuses them.

  # Data: skdim.datasets.BenchmarkManifolds(random_state=seed·1000 + index in ALL [+ 500 for the
  # held-out draw]).generate(name, n, D, d); centred and divided by one scale (a similarity: the
  # LID, the shape and the exact densities are kept). Per-point estimates are reported on the
  # first num_eval (shuffled) training points.
  c.data = ml_collections.ConfigDict(
    dict(manifolds=DEFAULT, num_train=2500, num_heldout=2048, num_eval=200, noise=0.0)
  )

  # One shared model and training recipe for both models of every manifold: a VP ε-MLP (denoising
  # objective) and a linear-FM velocity MLP (FM objective). Training stops by the held-out rule of
  # experiments/lid/fitting.py (every 500 steps on a fixed held-out batch of 2048, patience 5, min
  # relative improvement 0.005, best EMA parameters kept; cap `steps`), fixed before any benchmark
  # number was looked at.
  c.model = cc.mlp_model((256, 256, 256))
  c.train = cc.adam_train(5000, 256, lr=1e-3, ema_decay=0.999, t_min=1e-3)
  c.train.stopping = fitting.stopping_section()
  c.models = ("vp_eps", "fm_velocity")

  # Model-based LID. t0 = 0.05 on vp_linear (σ/ψ ≈ 0.17), stated before any run; the FM model's
  # times are matched by noise level σ/ψ. The knee t0 (Kneedle on the mean learned curve over
  # t0_grid, ordered by increasing noise, which must contain t0) is reported beside it. The trace
  # is exact (D JVPs) for D <= exact_trace_max_dim, else Hutchinson with n_probes Rademacher
  # probes. exact_score: FLIPD (and the normal bundle when exact_nb) of the exact score of the
  # noised data distribution (float64) where memjax.data has it (M1 sphere, M9 affine, M10 cubes).
  c.lid = ml_collections.ConfigDict(
    dict(
      t0_schedule="vp_linear",
      t0=0.05,
      t0_grid=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
      exact_trace_max_dim=16,
      n_probes=16,
      sampler="signs",
      nb_t0=0.01,
      nb_centre=False,
      batch_size=100,
      exact_score=True,
      exact_nb=True,
    )
  )

  # Data-based LID: memjax (float64) and scikit-dimension. lPCA: Fukunaga–Olsen rule (eigenvalues
  # above threshold·λ₁) on the k nearest neighbours (self excluded, as skdim's fit_pw); MLE:
  # Levina–Bickel on k neighbours; TwoNN and DANCo are global estimates (every point gets the
  # global value); ESS is local (k neighbours) and the slowest (≈ 45 ms a point on one core), run
  # on the num_eval evaluation points only.
  c.classical = ml_collections.ConfigDict(
    dict(
      lpca_k=100,
      lpca_threshold=0.05,
      mle_k=20,
      twonn_discard_fraction=0.1,
      danco_ver="DANCo",
      danco_k=10,
      ess_k=100,
      skdim=("lpca", "mle", "twonn", "danco", "ess"),
    )
  )

  if arg == "smoke":
    c.data.update(manifolds=("M5a_Helix1d", "M1_Sphere"), num_train=400, num_heldout=256)
    c.data.num_eval = 20
    fitting.shrink(c, (32, 32), steps=100, batch_size=64)
    c.lid.update(t0_grid=(0.01, 0.05, 0.2, 0.5), exact_trace_max_dim=4, n_probes=4, exact_nb=False)
    c.classical.update(lpca_k=20, ess_k=20, danco_ver="DANCoFit")
  elif arg == "large":  # the full collection, for a GPU
    c.data.manifolds = tuple(name for name, _, _ in ALL)
    c.data.update(num_train=5000, num_eval=500)
    c.model.hidden = (512, 512, 512, 512)
    c.train.update(steps=40000, batch_size=512)
    c.lid.update(exact_trace_max_dim=32, n_probes=64)
    c.classical.danco_ver = "DANCoFit"  # simulated calibration up to D = 96 is slow
  return c
