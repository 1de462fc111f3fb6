"""Generator speed and input-pipeline throughput (issue 3).

    python -m experiments.data_throughput [--data_dir DIR] [--batches 50]

- ListOps generator: ms per accepted tree (median of 3 runs of 2000 trees).
- Pathfinder generator: hard images per second on one core (median of 3 runs) and with
  two worker processes.
- Input pipelines: training examples per second out of `get_datasets(config).train` (after
  the first batch), batch 32, for every task that can be had offline here: generated
  ListOps and Pathfinder, Fashion-MNIST (Debian), Retrieval on synthetic AAN-format files
  (4 KB documents), and CIFAR-10 / IMDb on `tfds.testing.mock_data` (random records: this
  measures our transforms and grain, not TFDS's image decoding).

Writes experiments/results/data_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np

from configs import default
from rmaat_jax.data import listops, pathfinder
from rmaat_jax.data.builders import FASHION_MNIST_DIR
from rmaat_jax.data.pipeline import get_datasets

HERE = pathlib.Path(__file__).resolve().parent
def _median_time(fn, runs: int = 3) -> float:
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def generator_speed(scratch: pathlib.Path) -> dict[str, float]:
  listops_s = _median_time(lambda: listops.generate(2000, seed=1))
  hard = _median_time(lambda: pathfinder.generate_batch(
      200, "hard", pathfinder.batch_rng(1, "hard", 0)))
  start = time.perf_counter()
  pathfinder.main(["--out", str(scratch / "pf2"), "--difficulty", "hard", "--num", "800",
                   "--seed", "2", "--workers", "2"])
  two_workers = 800 / (time.perf_counter() - start)
  return {"listops_ms_per_tree": 1000 * listops_s / 2000,
          "pathfinder_hard_images_per_s_1_core": 200 / hard,
          "pathfinder_hard_images_per_s_2_workers_incl_png": two_workers}


def _config(dataset: str, data_dir: pathlib.Path, **data):
  """configs/default.py reading `dataset` at its full length, batch 32."""
  config = default.get_config()
  config.train.update(batch_size=32, seed=0)
  config.data.update({**dict(dataset=dataset, data_dir=str(data_dir), download=False,
                            generate_sizes=(4000, 200, 200), generate_workers=2), **data})
  return config


def _write_aan(directory: pathlib.Path, rows: int = 2000) -> None:
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True, exist_ok=True)
  alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz   .,", np.uint8)
  for split in ("train", "eval", "test"):
    with open(directory / f"new_aan_pairs.{split}.tsv", "w") as f:
      for i in range(rows):
        a, b = (rng.choice(alphabet, 4096).tobytes().decode() for _ in range(2))
        f.write(f"{i % 2}\taan{i}\taan{i + 1}\t{a}\t{b}\n")


def examples_per_second(config, batches: int) -> float:
  it = iter(get_datasets(config).train)
  next(it)  # opens files and warms up the transforms
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.train.batch_size / (time.perf_counter() - start)


def pipeline_throughput(data_dir: pathlib.Path, batches: int) -> dict[str, float]:
  import tensorflow_datasets as tfds

  results = {
      "listops (generated)": examples_per_second(
          _config("listops", data_dir, generate=True), batches),
      "pathfinder (generated, hard)": examples_per_second(
          _config("pathfinder", data_dir, generate=True), batches),
  }
  if os.path.isdir(FASHION_MNIST_DIR):
    results["fashion_mnist (Debian)"] = examples_per_second(
        _config("fashion_mnist", data_dir), batches)
  _write_aan(data_dir / "aan_synthetic")
  results["retrieval (synthetic AAN files)"] = examples_per_second(
      _config("retrieval", data_dir, manual_dir=str(data_dir / "aan_synthetic")), batches)
  with tfds.testing.mock_data(num_examples=2000):
    for name, dataset in (("image (cifar10 mock_data)", "image"),
                          ("text (imdb_reviews mock_data)", "text")):
      results[name] = examples_per_second(
          _config(dataset, data_dir / "mock", download=True), batches)
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", type=pathlib.Path, default=None,
                      help="TFDS data dir to prepare into (default: a temporary one)")
  parser.add_argument("--batches", type=int, default=50)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as scratch:
    data_dir = args.data_dir or pathlib.Path(scratch) / "tfds"
    generators = generator_speed(pathlib.Path(scratch))
    pipelines = pipeline_throughput(data_dir, args.batches)
  lines = ["| generator | value |", "|---|---|"]
  lines += [f"| {k} | {v:.3f} |" for k, v in generators.items()]
  lines += ["", "| pipeline (batch 32) | train examples/s |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in pipelines.items()]
  table = "\n".join(lines)
  print(table)
  out = HERE / "results"
  out.mkdir(exist_ok=True)
  meta = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count()}
  (out / "data_throughput.json").write_text(
      json.dumps({"meta": meta, "generators": generators, "pipelines": pipelines}, indent=1))
  (out / "data_throughput.md").write_text(f"# data_throughput ({meta['date']})\n\n{table}\n")


if __name__ == "__main__":
  main()
