"""Config of the audit (``memjax-audit --config=memjax/audit/configs.py[:VARIANT]``).

Variants: ``""`` (default) audits a checkpoint (``--config.checkpoint=runs/<run>/checkpoints``,
e.g. of ``experiments.laplace.images``) or any model (``--config.model.factory``,
``--config.model.params``, ``--config.data.source``), ``toy`` trains the
audit's own known-answer MLP (a set with one point copied many times) in-process and audits it,
``smoke`` is ``toy`` at test size with every lens on, the weight-space view included, and ``large``
is the default with 1024 samples and more probes, for a GPU audit of an image model.
"""

import ml_collections

ConfigDict = ml_collections.ConfigDict

# σ/ψ of Stable Diffusion v1's first DDIM step (50 steps; see experiments/sharpness/pipeline.py,
# ``sd_first_step_noise_to_signal``): the sharpness papers' detection time, FM t ≈ 0.071.
SD_FIRST_STEP_NOISE_TO_SIGNAL = 13.12
# σ/ψ of VP (β from 0.1 to 20) at t0 = 0.05, the LID paper's (Kamkari et al., arXiv:2406.03537)
# FLIPD time, matched across schedules by noise level: the audit's detection level, fixed before
# any data (tests check it against memjax.paths.noise_to_signal(vp_linear(), 0.05)).
LID_PAPER_NOISE_TO_SIGNAL = 0.174143


def get_config(arg: str | None = None) -> ConfigDict:
  arg = arg or ""
  if arg not in ("", "toy", "smoke", "large"):
    raise ValueError(f"unknown config variant {arg!r}; use '', 'toy', 'smoke' or 'large'.")
  c = ConfigDict()
  c.seed = 0
  c.workdir = ""  # "" = runs/audit/<UTC timestamp>
  c.progress = True
  c.x64 = False
  c.mesh = "auto"  # "auto": all devices when more than one; "none": one device

  # The model, one of two kinds:
  # - a checkpoint_dir of memjax.training.train (`checkpoint`): the network is rebuilt from the
  #   experiment config stored in its metadata (or `experiment_config`, a path[:variant] of the
  #   config file), the training data from the recipe stored beside it (memjax.data.recipe);
  # - any network (`model.factory` = "module:function" returning a Flax linen or NNX module or
  #   a pure f(params, x, t), parameters from `model.params`, a msgpack file or orbax
  #   directory), or a diffusers UNet2DModel folder (`model.diffusers`); the training data from
  #   `data.source`. The path (`model.schedule`, with `model.schedule_kwargs` as JSON) and the
  #   output (`model.parameterisation`) are the config's; a diffusers folder brings its own.
  # `experiment` is a label for the report; "audit.toy" with no checkpoint trains the toy first
  # into <workdir>/checkpoints.
  c.checkpoint = ""
  c.experiment = ""
  c.experiment_config = ""
  c.step = -1  # checkpoint step (-1: the newest)
  c.use_ema = True
  c.model = ConfigDict(
    dict(
      factory="",
      params="",
      diffusers="",
      schedule="linear_fm",  # a memjax.paths.SCHEDULES name
      schedule_kwargs="",  # JSON of the schedule's settings, e.g. '{"beta_max": 20.0}'
      parameterisation="velocity",  # velocity | eps | score | x0
      data_shape=(),  # () = the shape of one training point as loaded
    )
  )
  # The training data (`source`) and held-out data (`held_out`, "" = none, or the recipe's), in
  # any form memjax.data.load_source reads: a .npy/.npz file, a folder of PNG/JPEG images,
  # tfds:NAME[:SPLIT], digits, or module:function. Pixels are mapped to `value_range`.
  c.data = ConfigDict(dict(source="", held_out="", max_examples=0, value_range=(-1.0, 1.0)))

  # The toy experiment (experiment "audit.toy", memjax.audit.toy): N(0, I_dim) plus one point,
  # dup_offset away, copied for a fraction dup_fraction of the draws; the MLP trained on it.
  c.toy = ConfigDict(
    dict(
      seed=0,
      data=ConfigDict(
        dict(seed=0, dim=8, num_train=256, dup_fraction=0.25, dup_offset=6.0, num_held_out=256)
      ),
      model=ConfigDict(dict(hidden=(64, 64), time_dim=16)),
      train=ConfigDict(dict(steps=1500, batch_size=128, lr=2e-3, ema_decay=0.99)),
    )
  )

  # Generation from fixed noise (memjax.sampling.generate); t_margin: fraction of the time span
  # kept away from the ends for non-velocity outputs.
  c.sample = ConfigDict(
    dict(num_samples=128, solver="tsit5", rtol=1e-3, atol=1e-3, max_steps=4096, t_margin=1e-3)
  )
  # Memorised when d1² ≤ c d2² (the papers' squared criterion); cs: the M_c grid.
  c.memorisation = ConfigDict(dict(c=1 / 3, cs=(0.1, 0.2, 1 / 3, 0.5)))
  # FLIPD: scored at the detection level detection_noise_to_signal (σ/ψ fixed before the data;
  # t0_rule "knee": the curve's knee instead, refused when on the grid's edge); the curve over
  # num_t0 times log-spaced in noise_to_signal_range and its Kneedle knee are a diagnostic.
  # Exact trace for D ≤ exact_max_dim, else Hutchinson with num_probes. LID* by local PCA on
  # lpca_k neighbours ("not estimable" when lpca_k ≥ training size or lpca_k − 1 < D).
  # MMH: OD-Mem when FLIPD < LID* − mmh_tol; DD-Mem when |FLIPD − LID*| ≤ mmh_tol and LID* small:
  # dd_rule "paper" LID* ≤ dd_max_lid_fraction · D (Ross et al.: small relative to D),
  # "exact_duplicate" LID* ≤ dd_max_lid (copies only); both are reported.
  c.lid = ConfigDict(
    dict(
      enabled=True,
      detection_noise_to_signal=LID_PAPER_NOISE_TO_SIGNAL,
      t0_rule="fixed",
      noise_to_signal_range=(0.02, 2.0),
      num_t0=8,
      exact_max_dim=16,
      num_probes=8,
      batch_size=0,  # 0: all points at once
      lpca_k=100,
      lpca_threshold=0.05,
      mmh_tol=0.5,
      dd_rule="paper",
      dd_max_lid_fraction=0.25,
      dd_max_lid=0.5,
    )
  )
  # Sharpness: at the detection level (at_detection) averaged over num_noisy noisy states
  # ψx̂ + σε of each sample, and at each σ/ψ of noise_to_signal at the sampler's state from the
  # same noise; exact trace for D ≤ exact_max_dim.
  c.sharpness = ConfigDict(
    dict(
      enabled=True,
      at_detection=True,
      num_noisy=8,
      noise_to_signal=(SD_FIRST_STEP_NOISE_TO_SIGNAL,),
      exact_max_dim=16,
      num_probes=8,
      chunk_size=64,
    )
  )
  # Noise regimes on the training set: num_sigmas levels log-spaced over sigma_range (VE view);
  # W_σ of the training multiset as trained (multiset; False: the distinct points). The paper
  # (arXiv:2602.17846) defines C_σ, W_σ and a danger zone at medium noise; the thresholds are
  # memjax's: danger zone where C_σ ≥ threshold and W_σ ≥ threshold, shells of c = shell_c.
  c.regimes = ConfigDict(
    dict(
      enabled=True,
      sigma_range=(0.05, 80.0),
      num_sigmas=25,
      num_noise=4,
      profile_num_noise=2,
      shell_c=5.0,
      threshold=0.8,
      multiset=True,
    )
  )
  # Weight space (optional): Laplace over the parameters `select` ("" = all) at η (units of the
  # posterior's standard deviation, mode "subspace": top-k Lanczos directions), paired
  # Euclidean and Riemannian samples (memjax.laplace.posterior_samples).
  c.weight_space = ConfigDict(
    dict(
      enabled=False,
      eta=8.0,
      k=10,
      alpha=1.0,
      loss_scale=1.0,  # s of L(θ) = s Σ_b ℓ_b + (α/2)||θ||² (the Laplace experiments' value)
      num_triples=32,
      select="",  # substring(s) of the parameter paths to make Bayesian ("": every parameter)
      lanczos_iters=0,  # 0: the default depth
      refine_tol=0.0,  # 0: no refinement of θ*
      num_posterior=4,
      samplers=("euclidean", "riemannian"),
      mode="subspace",
      geo_rtol=1e-4,
      geo_atol=1e-6,
      geo_max_steps=256,
      check=True,  # refuse unconverged Lanczos pairs (False: sample with them, flagged)
    )
  )
  # Detection: fpr of TPR@FPR; bootstrap resamples and ci_level of the AUROC intervals;
  # membership_baseline: held-out real points through the criterion (the chance floor of M_c)
  # and, apart, training vs held-out points through the same detectors (not detection evidence).
  # off_data_factor: warn when the samples' median distance to the nearer of the training and
  # held-out sets exceeds this multiple of the held-out points' median distance to the training
  # set (a model in the wrong time convention, schedule or parameterisation; memjax's rule).
  c.summary = ConfigDict(
    dict(fpr=0.01, bootstrap=1000, ci_level=0.95, membership_baseline=True, off_data_factor=3.0)
  )
  c.report = ConfigDict(dict(num_show=8, bins=20))

  if arg == "large":  # a GPU audit of an image model (e.g. a diffusers DDPM on CIFAR-10)
    c.sample.num_samples = 1024
    c.lid.update(num_probes=16, batch_size=256)
    c.sharpness.update(num_probes=16, chunk_size=128)
  if arg in ("toy", "smoke"):
    c.experiment = "audit.toy"
    c.regimes.sigma_range = (0.01, 20.0)
  if arg == "smoke":
    c.progress = False
    c.toy.data.update(num_train=128, num_held_out=32)
    c.toy.train.steps = 1500
    c.sample.update(num_samples=32, rtol=1e-2, atol=1e-2)
    c.lid.update(num_t0=4, lpca_k=16)
    c.sharpness.num_noisy = 4
    c.summary.bootstrap = 200
    c.regimes.update(num_sigmas=6, num_noise=1, profile_num_noise=1)
    c.weight_space.update(
      enabled=True, eta=1.0, k=2, num_triples=8, num_posterior=2, select="out", geo_max_steps=64
    )
    c.report.num_show = 4
  c.lock()  # a misspelt key (cfg.lid.lpcak = 8) raises instead of being silently ignored
  return c
