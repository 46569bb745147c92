"""Image data: bundled digits offline; TFDS loaders through tfds.testing.mock_data (never the
network).
"""

import jax
import numpy as np
import pytest

from memjax import data


def test_digits_offline_scaled():
  x, y = data.load_digits()
  assert x.shape == (1797, 8, 8, 1) and y.shape == (1797,)
  assert x.min() == -1.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
  xf, _ = data.load_digits(flatten=True)
  np.testing.assert_array_equal(xf.reshape(x.shape), x)


def test_class_subset_deterministic():
  x, y = data.load_digits()
  a, la = data.class_subset(jax.random.PRNGKey(0), x, y, 16, classes=[3])
  b, _ = data.class_subset(jax.random.PRNGKey(0), x, y, 16, classes=[3])
  np.testing.assert_array_equal(a, b)
  assert np.all(la == 3)
  with pytest.raises(ValueError, match="`n`"):
    data.class_subset(jax.random.PRNGKey(0), x, y, 10_000)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_loader_with_mock_data(name, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    x, y = data.load_tfds(name, split="train", max_examples=10, batch_size=4)
  assert x.shape == (10,) + shape and x.dtype == np.float32 and y.shape == (10,)
  assert -1.0 <= x.min() and x.max() <= 1.0


def test_tfds_bad_name():
  with pytest.raises(ValueError, match="`name`"):
    data.load_tfds("imagenet")
