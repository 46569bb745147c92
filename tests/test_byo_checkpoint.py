"""memjax's own image experiment records its data recipe in the checkpoint: the audit rebuilds the
training and held-out digits from the checkpoint alone (no registry, no experiments import, no
key splits), bit for bit, and a changed source is refused."""

import os

import jax
import numpy as np
import pytest

from memjax import data
from memjax.audit import cli, configs, model


@pytest.mark.slow
def test_images_checkpoint_carries_its_data_recipe(tmp_path):
  from smoke import load_config

  from experiments.laplace import images

  cfg = load_config("laplace.images", "smoke")
  cfg.train_only = True
  cfg.progress = False
  ckpt = str(tmp_path / "ckpt")
  cfg.train.checkpoint_dir = ckpt
  images.run(cfg, str(tmp_path / "train"))
  k_data = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)[0]
  train, held, shape = images.load_images(cfg.data, k_data)

  rec = model.read_checkpoint(ckpt).metadata["data"]
  assert rec["train"]["source"] == "digits" and len(rec["train"]["indices"]) == 8
  assert rec["held_out"]["source"] == "digits" and len(rec["held_out"]["indices"]) == 64
  assert not set(rec["train"]["indices"]) & set(rec["held_out"]["indices"])

  acfg = configs.get_config("")
  acfg.checkpoint = ckpt
  m, d = cli.build(acfg, str(tmp_path / "audit"))  # the checkpoint alone
  np.testing.assert_array_equal(d.train, train)
  np.testing.assert_array_equal(d.held_out, held)
  assert d.data_shape == tuple(shape) == m.data_shape == (8, 8, 1)
  assert m.info["data_sha256"] == data.fingerprint(train)["sha256"]
  # The recipe's hash guards the source: another value range gives other pixels.
  rec["train"]["value_range"] = [0.0, 1.0]
  with pytest.raises(ValueError, match="differs from the hash"):
    data.from_recipe(rec)
  assert os.path.isdir(ckpt)
