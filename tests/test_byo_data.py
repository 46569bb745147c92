"""Training data from where users keep it (memjax.data.load_source) and the recipe a checkpoint
stores to rebuild it (memjax.data.recipe / from_recipe): every form, exact pixel scaling against
an independent computation, and one clear error per mistake."""

import os

import numpy as np
import pytest
from PIL import Image

from memjax import data


def _pixels(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def _write_folder(folder, images, suffix=".png"):
  os.makedirs(folder, exist_ok=True)
  for i, img in enumerate(images):
    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    im.save(os.path.join(folder, f"img_{i:03d}{suffix}"))
  return str(folder)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_is_decoded_and_scaled_exactly(tmp_path, channels):
  imgs = _pixels(5, (6, 7, channels))
  folder = _write_folder(tmp_path / "imgs", imgs)
  with open(os.path.join(folder, "notes.txt"), "w") as f:  # other files are ignored
    f.write("not an image")
  x = data.load_source(folder)
  assert x.shape == (5, 6, 7, channels) and x.dtype == np.float32
  np.testing.assert_allclose(x, imgs.astype(np.float64) * 2 / 255 - 1, atol=1e-6)
  y = data.load_source(folder, value_range=(0.0, 1.0), max_examples=3)
  np.testing.assert_allclose(y, imgs[:3] / 255.0, atol=1e-6)


def test_jpeg_folder_reads(tmp_path):
  imgs = np.full((3, 8, 8, 3), 200, np.uint8)  # flat colour: JPEG keeps it (almost) exactly
  x = data.load_source(_write_folder(tmp_path / "jpg", imgs, ".jpg"))
  assert x.shape == (3, 8, 8, 3)
  np.testing.assert_allclose(x, 200 * 2 / 255 - 1, atol=2 * 2 / 255)


def test_image_folder_of_mixed_sizes_or_channels_is_one_clear_error(tmp_path):
  folder = _write_folder(
    tmp_path / "sizes", list(_pixels(2, (6, 6, 1))) + [_pixels(1, (5, 6, 1))[0]]
  )
  with pytest.raises(ValueError, match="differ in size or channels.*img_002"):
    data.load_source(folder)
  folder = _write_folder(
    tmp_path / "modes", list(_pixels(2, (6, 6, 1))) + [_pixels(1, (6, 6, 3))[0]]
  )
  with pytest.raises(ValueError, match="differ in size or channels"):
    data.load_source(folder)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="holds no"):
    data.load_source(str(empty))
  rgba = tmp_path / "rgba"
  rgba.mkdir()
  Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(rgba / "a.png")
  with pytest.raises(ValueError, match="mode 'RGBA'"):
    data.load_source(str(rgba))


def test_npy_and_npz_files(tmp_path):
  pix = _pixels(4, (3, 3, 1))
  np.save(tmp_path / "pix.npy", pix)
  np.testing.assert_allclose(
    data.load_source(str(tmp_path / "pix.npy")), pix.astype(np.float64) * 2 / 255 - 1, atol=1e-6
  )
  vec = np.random.default_rng(1).normal(size=(10, 5))
  np.savez(tmp_path / "sets.npz", train=vec, held_out=vec[:2])
  np.testing.assert_array_equal(data.load_source(str(tmp_path / "sets.npz")), vec)  # floats kept
  np.testing.assert_array_equal(data.load_source(f"{tmp_path}/sets.npz:held_out"), vec[:2])
  np.savez(tmp_path / "two.npz", a=vec, b=vec)
  with pytest.raises(ValueError, match="holds arrays"):
    data.load_source(str(tmp_path / "two.npz"))
  bad = vec.copy()
  bad[0, 0] = np.nan
  np.save(tmp_path / "nan.npy", bad)
  with pytest.raises(ValueError, match="NaN"):
    data.load_source(str(tmp_path / "nan.npy"))
  np.save(tmp_path / "one.npy", vec[0])
  with pytest.raises(ValueError, match=r"\(N, \.\.\.\)"):
    data.load_source(str(tmp_path / "one.npy"))


def test_missing_and_unknown_sources_name_the_argument(tmp_path):
  with pytest.raises(ValueError, match="`source`.*not an existing file"):
    data.load_source(str(tmp_path / "nope.npy"))
  with pytest.raises(ValueError, match="`source`.*not an existing file"):
    data.load_source(str(tmp_path / "no_folder/"))
  with pytest.raises(ValueError, match="cannot import"):
    data.load_source("no_such_module_xyz:load")
  with pytest.raises(ValueError, match="`value_range`"):
    data.load_source("digits", value_range=(1.0, -1.0))


def test_module_function_source(tmp_path, monkeypatch):
  (tmp_path / "user_data_mod.py").write_text(
    "import numpy as np\n"
    "def load():\n  return np.arange(12, dtype=np.float32).reshape(4, 3)\n"
    "def pair():\n  return np.zeros((2, 2)), np.zeros((2, 2))\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  np.testing.assert_array_equal(data.load_source("user_data_mod:load"), np.arange(12).reshape(4, 3))
  with pytest.raises(ValueError, match="one array"):
    data.load_source("user_data_mod:pair")
  with pytest.raises(ValueError, match="no function 'nope'"):
    data.load_source("user_data_mod:nope")


def test_digits_source_is_the_bundled_set():
  x, _ = data.load_digits()
  np.testing.assert_array_equal(data.load_source("digits"), x)


def test_tfds_source_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    x = data.load_source("tfds:mnist:train", max_examples=10)
    y = data.load_source("tfds:mnist")  # default split: train
    ref, _ = data.load_tfds("mnist", "train", max_examples=12)
  assert x.shape == (10, 28, 28, 1) and y.shape == (12, 28, 28, 1)
  np.testing.assert_array_equal(y, ref)
  with pytest.raises(ValueError, match="tfds:NAME"):
    data.load_source("tfds:")


def test_recipe_rebuilds_by_indices_and_refuses_a_changed_source(tmp_path):
  imgs = _pixels(20, (4, 4, 1), seed=3)
  folder = _write_folder(tmp_path / "src", imgs)
  pool = data.load_source(folder)
  pick, held_pick = np.array([7, 2, 2, 15]), np.array([0, 1])  # a duplicate row too
  rec = data.recipe(pool[pick], folder, pool[held_pick])
  assert rec["train"]["indices"] == [7, 2, 2, 15] and rec["held_out"]["indices"] == [0, 1]
  train, held = data.from_recipe(rec)
  np.testing.assert_array_equal(train, pool[pick])
  np.testing.assert_array_equal(held, pool[held_pick])
  with pytest.raises(ValueError, match="not in `source`"):
    data.recipe(pool[:2] + 0.5, folder)
  inline = data.recipe(pool[:3])
  np.testing.assert_array_equal(data.from_recipe(inline)[0], pool[:3])
  with pytest.raises(ValueError, match="too many"):
    data.recipe(np.zeros((data.MAX_INLINE + 1, 1), np.float32))
  imgs[7, 0, 0, 0] ^= 1  # the source changes after training
  _write_folder(folder, imgs)
  with pytest.raises(ValueError, match="differs from the hash"):
    data.from_recipe(rec)
