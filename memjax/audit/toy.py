"""The audit's own known-answer case: a small data set with one point copied many times.

``n`` draws from the mixture ``(1 − p) N(0, I_D) + p N(a e₁, I_D)`` in which every draw of the
second component is replaced by ONE shared draw (:func:`memjax.data.duplicated_sample`): a point
copied ``≈ pn`` times, ``a = dup_offset`` away from the broad part. A flow-matching MLP trained on
it sends the noise that reaches that region onto the copied point (nearest-neighbour ratio ``≪
1/3``: the second-nearest distinct point is in the broad part), while samples of the broad part are
not memorised, so every detector of the audit has a known answer. :func:`train` fits the MLP with
:func:`memjax.training.train` and writes an orbax checkpoint whose metadata holds the config, the
form :func:`memjax.audit.from_checkpoint` reads.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import data, nets, training


class ToyData(NamedTuple):
  """Training points, held-out points of the broad part and the duplicated point."""

  train: np.ndarray  # (n, D), the copies included
  held_out: np.ndarray  # (m, D) fresh draws of N(0, I)
  duplicate: np.ndarray  # (D,) the point that is repeated
  num_copies: int


def make_data(data_cfg) -> ToyData:
  """The toy set of ``data_cfg`` (``seed``, ``dim``, ``num_train``, ``dup_fraction``,
  ``dup_offset``, ``num_held_out``), float32; the held-out points are fresh draws of the broad
  part."""
  d = int(data_cfg["dim"])
  p = float(data_cfg["dup_fraction"])
  if not 0 < p < 1:
    raise ValueError(f"`dup_fraction` must lie in (0, 1); got {p}.")
  means = np.zeros((2, d))
  means[1, 0] = float(data_cfg["dup_offset"])
  gmm = data.gaussian_mixture(means, 1.0, weights=[1.0 - p, p])
  k_train, k_held = jax.random.split(jax.random.PRNGKey(int(data_cfg["seed"])))
  x, comp, _ = data.duplicated_sample(k_train, gmm, int(data_cfg["num_train"]), duplicate=1)
  comp = np.asarray(comp)
  if not comp.any() or comp.all():
    raise ValueError("the toy set needs both duplicated and distinct points; change `seed`.")
  held = jax.random.normal(k_held, (int(data_cfg["num_held_out"]), d), jnp.float32)
  x = np.asarray(x, np.float32)
  return ToyData(x, np.asarray(held), x[np.flatnonzero(comp)[0]], int(comp.sum()))


def train(
  exp_cfg: dict,
  train_points,
  key,
  checkpoint_dir: str | None = None,
  progress=False,
  held_out=None,
):
  """Fit the MLP of ``exp_cfg["model"]`` (``hidden``, ``time_dim``) by flow matching.

  Adam with learning rate ``exp_cfg["train"]["lr"]`` for ``steps`` steps of ``batch_size``
  (:func:`memjax.training.fm_objective`), EMA ``ema_decay``; with ``checkpoint_dir`` the run is
  saved there with the config and the data (training and ``held_out`` points inline,
  :func:`memjax.data.recipe`) as metadata. Returns ``(apply_fn, params)``.
  """
  mc, tc = exp_cfg["model"], exp_cfg["train"]
  x = jnp.asarray(train_points, jnp.float32)
  module = nets.MLPField(dim=x.shape[1], hidden=tuple(mc["hidden"]), time_dim=mc["time_dim"])
  apply_fn = nets.velocity_fn(module)
  k_init, k_train = jax.random.split(key)
  params = nets.init_params(module, k_init, x.shape[1], jnp.float32)
  loss = training.fm_objective(apply_fn, x, int(tc["batch_size"]))
  res = training.train(
    loss,
    params,
    optax.adam(float(tc["lr"])),
    int(tc["steps"]),
    k_train,
    chunk_size=min(500, int(tc["steps"])),
    ema_decay=float(tc["ema_decay"]),
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    metadata={"config": exp_cfg, "data": data.recipe(np.asarray(x), held_out=held_out)},
  )
  return apply_fn, res.state.ema_params
