"""Small files in the real formats of LRA's releases and Fashion-MNIST, and minimal data
configs for get_datasets, for tests."""

import gzip
import pathlib

import numpy as np

from rmaat_jax.configs import default
from rmaat_jax.data import listops


def write_aan(directory: pathlib.Path, rows: int = 6) -> None:
  """LRA's tsv_data/new_aan_pairs.{train,eval,test}.tsv: label, id1, id2, text1, text2."""
  directory.mkdir(parents=True, exist_ok=True)
  for split in ("train", "eval", "test"):
    lines = [f"{i % 2}.0\taan/{i}\taan/{i + 100}\tdoc one {split} {i}\tsecond é {i}"
             for i in range(rows)]
    (directory / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  """A gzipped idx file of unsigned bytes (the MNIST format)."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(directory: pathlib.Path, num_train: int = 20, num_test: int = 5,
                        seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = {"train": rng.integers(0, 256, (num_train, 28, 28)),
            "t10k": rng.integers(0, 256, (num_test, 28, 28))}
  directory.mkdir(parents=True, exist_ok=True)
  for prefix, array in images.items():
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", array)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(array)) % 10)
  return images


def write_listops(directory: pathlib.Path, rows: list[tuple[str, int]]) -> None:
  """The same rows in basic_{train,val,test}.tsv (LRA's header and format)."""
  directory.mkdir(parents=True, exist_ok=True)
  for name in listops.SPLIT_FILES:
    (directory / name).write_text(
        "Source\tTarget\n" + "".join(f"{s}\t{y}\n" for s, y in rows))


def max_min_rows() -> list[tuple[str, int]]:
  """Every [MAX a b] and [MIN a b]: a small task that is learnable in a few hundred steps."""
  rows = []
  for op, fn in (("[MAX", max), ("[MIN", min)):
    for a in range(10):
      for b in range(10):
        rows.append((f"( ( ( {op} {a} ) {b} ) ] )", fn(a, b)))
  return rows


# --- minimal configs for get_datasets ------------------------------------------------------

# Per dataset: the length the tests read, and (vocab_size, num_classes, pad_id, dual_encoder)
# as the tests expect them (an independent statement of rmaat_jax.data.tasks.TASKS).
SEQ = {"listops": 64, "text": 96, "retrieval": 48, "image": 1024, "fashion_mnist": 1024,
       "pathfinder": 1024, "recall": 0}  # recall: its data.recall length (4 x 64)
MODEL = {"listops": (17, 10, 0, False), "text": (257, 2, 0, False),
         "retrieval": (257, 2, 0, True), "image": (256, 10, -1, False),
         "fashion_mnist": (256, 10, -1, False), "pathfinder": (256, 2, -1, False),
         "recall": (32, 10, 0, False)}


def make_config(dataset, data_dir, batch_size=4, seed=0, **data):
  """rmaat_jax/configs/default.py with a short length (text-like tasks) and small data settings."""
  config = default.get_config()
  config.model.seq_len = SEQ[dataset]
  config.train.update(batch_size=batch_size, seed=seed)
  config.data.update({**dict(dataset=dataset, data_dir=str(data_dir), download=False,
                            generate_sizes=(24, 8, 8)), **data})
  return config
