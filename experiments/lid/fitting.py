"""The LID experiments' model fit: train until the held-out loss stops improving.

The rule, fixed before any LID or detection number was looked at (issue 13): the objective of
:func:`experiments.common.fit_mlp` (denoising or FM) with cosine-decayed Adam over the config's
``train.steps`` (the cap), evaluated after every chunk of ``stopping.eval_every`` (500) steps on a
FIXED held-out batch of ``stopping.num`` (2048) examples drawn from data the model never sees
(:func:`memjax.training.heldout_denoising_loss` / ``heldout_fm_loss``), patience
``stopping.patience`` (5) evaluations, minimum relative improvement
``stopping.min_rel_improvement`` (0.005); the best (EMA when ``train.ema_decay`` is set) parameters
are kept (:class:`memjax.training.HeldoutStopping`).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from experiments import common
from memjax import nets, training


def stopping_section(
  eval_every: int = 500,
  num: int = 2048,
  patience: int = 5,
  min_rel_improvement: float = 0.005,
  enabled: bool = True,
) -> ml_collections.ConfigDict:
  """The ``train.stopping`` section: the held-out stopping rule (defaults: the issue-13 rule).

  ``enabled=False`` trains to the cap and keeps the FINAL parameters (the held-out curve is still
  recorded), e.g. to study a model trained past its held-out optimum."""
  return ml_collections.ConfigDict(dict(locals()))


def rule_text(cfg) -> str:
  """The stopping rule in words, for results.json."""
  s = cfg.train.stopping
  if not s.enabled:
    return (
      f"no early stopping: {cfg.train.steps} steps, final parameters kept; the held-out loss "
      f"(fixed batch of {s.num}) is only recorded every {s.eval_every} steps"
    )
  return (
    f"held-out loss on a fixed batch of {s.num} held-out examples after every {s.eval_every} "
    f"steps; stop after {s.patience} evaluations without a relative improvement of "
    f"{s.min_rel_improvement}; keep the best {'EMA ' if cfg.train.get('ema_decay') else ''}"
    f"parameters; cap {cfg.train.steps} steps (cosine decay over the cap). Fixed before any "
    "LID/detection number was looked at."
  )


def fit_with_stopping(
  train,
  held_out,
  cfg,
  key,
  *,
  objective: str = "fm",
  schedule=None,
  parameterisation: str = "velocity",
  t_min: float = 1e-3,
):
  """Fit a :class:`memjax.nets.MLPField` on ``train`` under the held-out stopping rule.

  ``held_out`` ``(M, D)`` are examples of the data distribution not in ``train``. Returns
  ``(apply_fn, best_params, report)``; ``report`` has the stopping step, the best held-out loss,
  the loss of the same fixed-batch recipe on ``train`` (the comparable train loss), the running
  train loss of the last chunk and the held-out curve.
  """
  k_init, k_train, k_held = jax.random.split(key, 3)
  d = train.shape[1]
  M, T, S = cfg.model, cfg.train, cfg.train.stopping
  module = nets.MLPField(dim=d, hidden=tuple(M.hidden), time_dim=M.time_dim)
  apply_fn = nets.velocity_fn(module)
  params = nets.init_params(module, k_init, d, train.dtype)
  if objective == "fm":
    loss_fn = training.fm_objective(apply_fn, train, T.batch_size)
    fixed = lambda x: training.heldout_fm_loss(apply_fn, x, k_held, S.num)
  elif objective == "denoising":
    loss_fn = training.denoising_objective(
      apply_fn, schedule, train, T.batch_size, parameterisation, t_min
    )
    fixed = lambda x: training.heldout_denoising_loss(
      apply_fn, schedule, x, k_held, S.num, parameterisation, t_min
    )
  else:
    raise ValueError(f"`objective` must be 'fm' or 'denoising'; got {objective!r}.")
  held_loss, train_loss = fixed(held_out), fixed(train)
  rule = training.HeldoutStopping(held_loss, S.patience, S.min_rel_improvement)
  steps = int(T.steps)
  ema = T.get("ema_decay", None) or None
  with common.Timer() as timer:
    res = training.train(
      loss_fn,
      params,
      common.cosine_adam(T.lr, steps, int(T.get("warmup", 0) or 0)),
      steps,
      k_train,
      chunk_size=min(int(S.eval_every), steps),
      ema_decay=ema,
      progress=cfg.progress,
      callback=rule if S.enabled else lambda state, losses: bool(rule(state, losses)) and False,
    )
  done = int(res.state.step)
  if S.enabled:
    best = rule.best_params
  else:
    best = res.state.ema_params if ema is not None else res.state.params
  losses = np.asarray(res.losses[:done])
  report = {
    **rule.summary(),
    "early_stopping": bool(S.enabled),
    "final_heldout_loss": float(held_loss(best)),
    "stopping_step": done,
    "max_steps": steps,
    "train_seconds": timer.seconds,
    "best_fixed_batch_train_loss": float(train_loss(best)),
    "running_train_loss_last_chunk": float(np.mean(losses[-int(S.eval_every) :])),
    "heldout_curve": [[int(s), float(v)] for s, v in rule.history],
    "rule": rule_text(cfg),
  }
  return apply_fn, best, report
