"""The LID experiments' model fit: train until the held-out loss stops improving.

The rule, fixed before any LID or detection number was looked at: the objective of
:func:`experiments.common.mlp_objective` (denoising or FM) with cosine-decayed Adam over the
config's ``train.steps`` (the cap), evaluated after every chunk of ``stopping.eval_every`` (500)
steps on a FIXED held-out batch of ``stopping.num`` (2048) examples drawn from data the model never
sees (:func:`memjax.training.heldout_denoising_loss` / ``heldout_fm_loss``), patience
``stopping.patience`` (5) evaluations, minimum relative improvement
``stopping.min_rel_improvement`` (0.005); the best (EMA when ``train.ema_decay`` is set) parameters
are kept (:class:`memjax.training.HeldoutStopping`). With ``cache_dir`` a finished fit is stored
(orbax, fingerprinted) and reused by a later call with the same identity.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments import configs_common as cc
from memjax import training


def stopping_section(
  eval_every: int = 500,
  num: int = 2048,
  patience: int = 5,
  min_rel_improvement: float = 0.005,
  enabled: bool = True,
) -> ml_collections.ConfigDict:
  """The ``train.stopping`` section: the held-out stopping rule.

  The defaults are the rule fixed before any LID or detection number was looked at.
  ``enabled=False`` trains to the cap and keeps the FINAL parameters (the held-out curve is still
  recorded), e.g. to study a model trained past its held-out optimum."""
  return ml_collections.ConfigDict(dict(locals()))


def shrink(cfg, hidden, steps: int, batch_size: int) -> None:
  """Smoke size of a config: MLP widths, steps and batch size
  (:func:`experiments.configs_common.shrink_mlp`), the held-out rule every 50 steps on 256."""
  cc.shrink_mlp(cfg, hidden, steps=steps, batch_size=batch_size)
  cfg.train.stopping = stopping_section(eval_every=50, num=256)


def memorise(train_cfg) -> None:
  """The ``memorise`` variant's training (the one used before the held-out rule was fixed).

  Trained past the held-out optimum, no EMA, no early stopping, final parameters kept.
  """
  train_cfg.ema_decay = 0.0
  train_cfg.stopping.enabled = False


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


def fit_with_stopping(train, held_out, cfg, key, *, cache_dir: str | None = None, **objective):
  """Fit a :class:`memjax.nets.MLPField` on ``train`` under the held-out stopping rule.

  ``held_out`` ``(M, D)`` are examples of the data distribution not in ``train``; ``objective``
  (``objective``, ``schedule``, ``parameterisation``, ``t_min``; default FM) chooses the loss, see
  :func:`experiments.common.mlp_objective`. Training is :func:`experiments.common.fit` with the
  rule as its callback. Returns ``(apply_fn, best_params, report)``; ``report`` has the stopping
  step, the best held-out loss, the loss of the same fixed-batch recipe on ``train`` (the
  comparable train loss), the running train loss of the last chunk and the held-out curve.

  With ``cache_dir`` the finished fit is a cache: the best parameters and the report are saved
  there as a memjax training checkpoint (orbax, SHA-256 checksum, run fingerprint) in a
  sub-directory named by a hash of the fit's identity (objective, model, train and stopping
  settings with the cap, data and held-out hashes, key), and a later call with the same identity
  restores them instead of training (``report["cached"]`` is then ``True``).
  """
  k_init, k_train, k_held = jax.random.split(key, 3)
  T = cfg.train
  obj = common.mlp_objective(train, cfg.model, T.batch_size, k_init, **objective)
  if cache_dir:
    identity = common.to_jsonable(
      {
        **obj.identity,
        "train": T,
        "heldout": training.data_fingerprint(held_out),
        "key": np.asarray(jax.random.key_data(key)),
      }
    )
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"fit-{digest}")
    hit = _load_fit(path, obj.params, identity)
    if hit is not None:
      return (obj.apply_fn, *hit)
    apply_fn, best, report = _fit_with_stopping(obj, train, held_out, cfg, k_train, k_held)
    _save_fit(path, best, report, identity)
    return apply_fn, best, {**report, "cached": False, "cache_path": path}
  return _fit_with_stopping(obj, train, held_out, cfg, k_train, k_held)


def _manager(path):
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
  return ocp.CheckpointManager(os.path.abspath(path), options=options)


def _save_fit(path, params, report, identity) -> None:
  """The best ``params`` and ``report`` as a training checkpoint at ``path`` (fingerprinted)."""
  state = training.TrainState(jnp.asarray(report["best_step"], jnp.int32), params, {}, None)
  manager = _manager(path)
  try:
    curve = np.asarray([v for _, v in report["heldout_curve"]] or [np.nan], np.float32)
    training.save_checkpoint(manager, state, curve, {"report": report}, identity)
  finally:
    manager.close()


def _load_fit(path, like_params, identity):
  """``(params, report)`` cached at ``path`` for this ``identity``, or ``None`` if absent."""
  import orbax.checkpoint as ocp

  if not os.path.isdir(path):
    return None
  like = training.TrainState(jnp.asarray(0, jnp.int32), like_params, {}, None)
  manager = _manager(path)
  try:
    step = manager.latest_step()
    if step is None:
      return None
    with common.Timer() as t:
      state, _ = training.restore_checkpoint(manager, like, step=step)  # checksum-verified
      args = ocp.args.Composite(metadata=ocp.args.JsonRestore())
      meta = manager.restore(step, args=args).metadata
  finally:
    manager.close()
  if meta.get("fingerprint") != json.loads(json.dumps(identity, default=str)):
    raise training.CheckpointError(f"cached fit {path!r} holds another fit; delete it to refit.")
  report = {**meta["report"], "cached": True, "cache_path": path, "load_seconds": t.seconds}
  return state.params, report


def _fit_with_stopping(obj, train, held_out, cfg, k_train, k_held):
  T, S = cfg.train, cfg.train.stopping
  held_loss, train_loss = (obj.fixed_batch_loss(x, k_held, S.num) for x in (held_out, train))
  rule = training.HeldoutStopping(held_loss, S.patience, S.min_rel_improvement)
  steps = int(T.steps)
  with common.Timer() as timer:
    final, _, res = common.fit(
      obj.loss_fn,
      obj.params,
      T,
      k_train,
      progress=cfg.progress,
      chunk_size=int(S.eval_every),
      callback=rule if S.enabled else lambda state, losses: bool(rule(state, losses)) and False,
      fingerprint=obj.identity,
    )
  done = int(res.state.step)
  best = rule.best_params if S.enabled else final
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
  return obj.apply_fn, best, report
