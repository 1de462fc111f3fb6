"""Bad input a user can give, other than config values: token ids, shapes, data files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_fixtures import make_config, max_min_rows, write_listops

from experiments.reliability.faults import error_lines, listops_flags, run_main
from rmaat_jax.data import pathfinder
from rmaat_jax.data.batching import ToModelInputs
from rmaat_jax.data.pipeline import get_datasets
from rmaat_jax.errors import DataFormatError
from rmaat_jax.models import build_model

TINY = dict(vocab_size=11, num_classes=3, pad_id=0, dual_encoder=False,
            seq_len=8, num_segments=2, emb_dim=8, num_heads=2,
            num_layers=1, mlp_dim=8, dropout_rate=0.0, backprop="bptt")


@pytest.fixture(scope="module")
def tiny_model():
  model = build_model(TINY)
  variables = model.init({"params": jax.random.key(0)}, jnp.ones((1, 8), jnp.int32))
  return model, variables


@pytest.mark.parametrize("bad_id", [11, 500, -1])
def test_token_ids_outside_the_vocabulary_are_rejected(tiny_model, bad_id):
  model, variables = tiny_model
  tokens = np.ones((2, 8), np.int32)
  tokens[1, 5] = bad_id
  with pytest.raises(ValueError, match=rf"token id {bad_id} is outside .*vocab_size=11"):
    model.apply(variables, jnp.asarray(tokens))
  assert model.apply(variables, jnp.asarray(np.clip(tokens, 0, 10))).shape == (2, 3)


@pytest.mark.parametrize("shape, dtype, message", [
    ((2, 9), jnp.int32, r"shape \(2, 9\); the model expects \[B, seq_len\] = \[B, 8\]"),
    ((8,), jnp.int32, r"shape \(8,\)"),
    ((2, 2, 8), jnp.int32, r"shape \(2, 2, 8\)"),
    ((2, 8), jnp.float32, "integer ids"),
])
def test_wrong_input_shapes_and_types_name_the_expected_shape(tiny_model, shape, dtype,
                                                              message):
  model, variables = tiny_model
  with pytest.raises(ValueError, match=message):
    model.apply(variables, jnp.zeros(shape, dtype))


def test_corrupt_token_ids_in_prepared_data_are_named():
  transform = ToModelInputs("tokens", 8, 0, vocab_size=17, name="listops")
  assert transform.map({"inputs": np.array([1, 16]), "targets": 3})["inputs"].max() == 16
  with pytest.raises(DataFormatError, match=r"listops: .*token id 17.*\[0, 17\)"):
    transform.map({"inputs": np.array([1, 17]), "targets": 3})


def test_unreadable_pathfinder_png_names_the_file(tmp_path):
  root = tmp_path / "pathfinder32"
  pathfinder.write_dataset(root, "hard", 12, seed=0)
  images = sorted(root.rglob("*.png"))
  images[4].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  with pytest.raises(DataFormatError, match=rf"cannot read image .*{images[4].name}"):
    get_datasets(make_config("pathfinder", tmp_path / "tfds", manual_dir=str(root)))


def test_wrongly_sized_pathfinder_png_names_the_file(tmp_path):
  from PIL import Image
  root = tmp_path / "pathfinder32"
  pathfinder.write_dataset(root, "hard", 12, seed=0)
  image = sorted(root.rglob("*.png"))[7]
  Image.new("L", (31, 32)).save(image)
  with pytest.raises(DataFormatError, match=rf"{image.name} is \(32, 31\), expected 32 x 32"):
    get_datasets(make_config("pathfinder", tmp_path / "tfds", manual_dir=str(root)))


def test_tsv_with_a_missing_column_exits_2_naming_file_and_line(tmp_path):
  lra = tmp_path / "listops-1000"
  write_listops(lra, max_min_rows()[:20])
  broken = lra / "basic_train.tsv"
  lines = broken.read_text().splitlines()
  lines[5] = lines[5].split("\t")[0]  # the Target column is gone
  broken.write_text("\n".join(lines) + "\n")
  code, stderr = run_main(tmp_path / "work", "--config.data.generate=False",
                          f"--config.data.manual_dir={lra}",
                          f"--config.data.data_dir={tmp_path / 'tfds'}",
                          "--config.model.seq_len=64", "--config.model.num_segments=2")
  assert code == 2, stderr
  errors = error_lines(stderr)
  assert len(errors) == 1 and "Traceback" not in stderr, stderr
  assert f"{broken}:6: expected 2 tab-separated columns" in errors[0]


def test_a_step_that_cannot_fit_stops_at_once_suggesting_amrb(listops_data, tmp_path):
  """BPTT over 64 segments on a device that has 0.05 GiB (train.memory_limit_gib)."""
  flags = listops_flags(listops_data, **{
      "model.seq_len": 4096, "model.num_segments": 64, "model.backprop": "bptt",
      "train.batch_size": 16, "train.memory_limit_gib": 0.05})
  code, stderr = run_main(tmp_path / "work", *flags)
  assert code == 2, stderr[-3000:]
  errors = error_lines(stderr)
  assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
  assert "out of memory: one training step needs" in errors[0]
  assert "--config.model.backprop=amrb" in errors[0]
  assert not (tmp_path / "work" / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (tmp_path / "work" / "checkpoints").iterdir())
