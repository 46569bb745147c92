"""Config of ``experiments/lid/manifolds.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc
from experiments.lid import fitting


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # Manifold mixture with analytic LID (memjax.data.manifold_mixture).
  c.data = ml_collections.ConfigDict(
    dict(
      dims=(2, 4, 8),
      kinds=("affine", "sphere", "affine"),
      ambient_dim=10,
      scale=1.5,
      separation=8.0,
      num_train=6000,
      num_eval=300,
      num_heldout=4096,  # fresh draws, never trained on: the held-out stopping batch
    )
  )

  # Denoiser: any schedule / parameterisation of memjax.paths (e.g. linear_fm + velocity for FM).
  c.model = cc.mlp_model((256, 256, 256), schedule="vp_linear", parameterisation="eps")
  # Denoising objective (memjax.training.denoising_objective), Adam with cosine decay over the cap
  # `steps`; training stops earlier by the held-out rule of experiments/lid/fitting.py (evaluate
  # every 500 steps on a fixed held-out batch of 2048, patience 5, min rel. improvement 0.005, keep
  # the best EMA parameters), fixed before any LID or detection number was looked at.
  c.train = cc.adam_train(40000, 512, lr=1e-3, ema_decay=0.999, t_min=1e-3)
  c.train.stopping = fitting.stopping_section()

  # LID estimators. Times are on `t0_schedule` and carried to the model's schedule by σ/ψ
  # (paths.match_noise_level); t0 grids are ordered by increasing noise (for the knee) and must
  # contain t0. exact_nb: also the normal bundle of the exact score.
  c.lid = ml_collections.ConfigDict(
    dict(
      t0_schedule="vp_linear",
      t0=0.05,
      t0_grid=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
      n_probes=0,  # 0: exact trace (D JVPs); m > 0: Hutchinson with m probes
      nb_t0=0.01,
      nb_centre=False,
      lpca_k=50,
      mle_k=20,
      batch_size=100,
      exact_nb=True,
    )
  )

  if arg == "smoke":
    c.data.update(num_train=600, num_eval=30, num_heldout=256)
    fitting.shrink(c, (32, 32), steps=150, batch_size=64)
    c.lid.update(t0_grid=(0.01, 0.05, 0.2, 0.5), lpca_k=20, exact_nb=False)
  return c
