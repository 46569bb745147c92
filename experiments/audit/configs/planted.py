"""Config of ``experiments/audit/planted.py``: the planted detection benchmark.

Variants: ``""`` (default: digits with a planted duplicated subset, one UNet per seed), ``toy``
(the audit's 8-D known-answer set, one MLP per seed: the fast case), ``toy_cond`` (a
class-conditional 8-D toy, some classes planted: per-prompt detection, Wen's norm and
``||H^Δ s^Δ||²``), ``smoke`` (``toy`` at test size), ``smoke_cond`` and ``smoke_digits`` (the
other cases at test size).

Protocol, FIXED BEFORE ANY RESULT WAS LOOKED AT (issue 25):

* Data (digits): ``num_unique`` distinct sklearn digits plus ``num_planted`` other digits each
  copied ``copies`` times (the planted subset); held-out real digits disjoint from both. Toy: the
  audit's set (N(0, I_8) plus one point copied for a fraction of the draws).
* Model: ONE network per seed trained on the whole multiset by flow matching for a fixed number
  of steps (digits: a UNet of widths (16, 32), 2000 Adam steps of 64, EMA 0.999; toy: the audit
  toy's MLP; no early stopping, no selection on results); the same model produces copies and
  novel samples. Seeds 0, 1, 2 (data draw, initialisation, training, noise follow the seed).
* Labels (per generated sample): the ratio criterion ``d1² ≤ c d2²`` with ``c = 1/3`` against the
  distinct training points (the detection labels), and, reported beside them, planted-source
  identity: the nearest training point is a planted copy and ``d1`` is below a third of that
  source's distance to the nearest other training point.
* Detectors: every detector of ``memjax.audit`` in its a-priori direction
  (``memjax.audit.lenses.DIRECTIONS``): FLIPD and LID* − FLIPD at the LID paper's σ/ψ = 0.174,
  ``−tr ∇s`` and ``||s||²`` averaged over 4 noisy states at that level and at the sampler's
  state at σ/ψ = 13.12; 128 generated samples per seed (sized for the 2-core machine). AUROC
  and TPR@1%FPR of generated positives against generated negatives; 95 % CI: stratified
  bootstrap of the samples (1000 resamples) of the seed-mean AUROC.
* The membership baseline (training vs held-out real digits) is reported apart, never as
  detection evidence.
* Conditional case (``toy_cond``): 16 classes N(μ_k, I_8), μ_k ~ N(0, 4² I), 24 draws each; in
  classes 0–7 half the draws are one copied draw. A conditional MLP (label dropout 0.1), 3000
  steps; guidance w = 2; 8 generations per class. Per prompt: the mean score of the class's
  generations; a prompt is memorised (ratio) when at least half its generations are, planted
  when its class is planted. Wen's norm and ``||H^Δ s^Δ||²`` at the σ/ψ = 13.12 sampler state.
"""

import ml_collections

from experiments import configs_common as cc
from memjax.audit import configs as audit_configs


def _audit_section(num_samples: int) -> ml_collections.ConfigDict:
  a = audit_configs.get_config("toy")
  a.sample.num_samples = num_samples
  a.regimes.enabled = False  # not a detector; the benchmark scores detectors only
  a.weight_space.enabled = False
  return a


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "toy", "toy_cond", "smoke", "smoke_cond", "smoke_digits"))
  c = cc.base()
  c.case = {"toy": "toy", "smoke": "toy", "toy_cond": "toy_cond", "smoke_cond": "toy_cond"}.get(
    arg, "digits"
  )
  c.seeds = (0, 1, 2)
  c.c = 1 / 3
  c.bootstrap = 1000
  # Digits: distinct digits, planted sources copied `copies` times each, held-out digits.
  c.digits = ml_collections.ConfigDict(
    dict(num_unique=300, num_planted=4, copies=40, num_held_out=256)
  )
  c.unet = ml_collections.ConfigDict(
    dict(widths=(16, 32), num_res_blocks=1, time_dim=16, attention=False, groups=8, conv="matmul")
  )
  c.train = cc.adam_train(2000, 64, lr=2e-3, warmup=200, ema_decay=0.999)
  # The toy case: memjax.audit.toy's data and MLP (its config section).
  c.toy = audit_configs.get_config("toy").toy
  c.toy_cond = ml_collections.ConfigDict(
    dict(
      dim=8,
      num_classes=16,
      num_planted=8,
      per_class=24,
      held_per_class=4,
      spread=4.0,
      copy_fraction=0.5,
      guidance=2.0,
      hidden=(128, 128),
      time_dim=16,
      train=cc.adam_train(3000, 128, lr=2e-3, ema_decay=0.99, p_uncond=0.1),
    )
  )
  c.audit = _audit_section(128)
  c.audit.sharpness.num_noisy = 4
  if arg in ("toy", "smoke", "toy_cond", "smoke_cond"):
    c.audit.lid.lpca_k = 32
  if c.case == "toy_cond":
    c.audit.sample.num_samples = 8 * c.toy_cond.num_classes  # 8 generations per prompt
  if arg == "smoke_cond":
    c.progress = False
    c.bootstrap = 100
    c.toy_cond.update(num_classes=8, num_planted=4, per_class=16)
    c.toy_cond.train.steps = 1000
    c.audit.sample.update(num_samples=48, rtol=1e-2, atol=1e-2)
    c.audit.lid.update(num_t0=4, lpca_k=16)
    c.audit.sharpness.num_noisy = 2
    c.audit.summary.bootstrap = 100
  if arg == "smoke":
    c.progress = False
    c.bootstrap = 200
    c.toy.data.update(num_train=128, num_held_out=32)
    c.audit.sample.update(num_samples=48, rtol=1e-2, atol=1e-2)
    c.audit.lid.update(num_t0=4, lpca_k=16)
    c.audit.sharpness.num_noisy = 4
    c.audit.summary.bootstrap = 100
  if arg == "smoke_digits":
    c.progress = False
    c.bootstrap = 100
    c.digits.update(num_unique=60, num_planted=2, copies=20, num_held_out=32)
    c.unet.widths = (8, 16)
    c.train.update(steps=200, batch_size=32, warmup=20)
    c.audit.sample.update(num_samples=24, rtol=1e-2, atol=1e-2)
    c.audit.lid.update(num_t0=4, lpca_k=70)
    c.audit.sharpness.num_noisy = 2
    c.audit.summary.bootstrap = 50
  return c
