"""Generator speed and input-pipeline throughput (issue 3).

    python -m experiments.benchmarks.data_throughput [--data_dir DIR] [--batches 50] [--workers 0,2]
        [--fake_records 10000] [--pipelines_only]
    python -m experiments.benchmarks.data_throughput --full_generators [--pathfinder_num 1000]
        [--pathfinder_workers_num 4000]

- ListOps generator: ms per accepted tree (median of 3 runs of 2000 trees).
- Pathfinder generator: hard images per second on one core (median of 3 runs) and with
  two worker processes.
- Input pipelines: training examples per second out of `get_datasets(config).train` (after
  the first 3 batches), batch 32, with data.num_workers 0 and 2 (`--workers`), median of 3
  runs, for every task that can be had offline here: generated ListOps and Pathfinder,
  Fashion-MNIST (Debian), Retrieval on synthetic AAN-format files (4 KB documents), and
  CIFAR-10 / IMDb in TFDS's real format with random content (`--fake_records` training
  records). "before" is the per-record pipeline that issue 13 item 6 replaced (a labelled
  copy in this file), run alternately with "after" on the same data; the run checks that
  both give the same batches.
- Reading: array_record's microseconds per record read one per call vs 32 per call, by
  the number of records in the file.

Writes experiments/results/data_throughput.{json,md} (`--out_dir` to write elsewhere).
`--pipelines_only` skips the generators.

`--full_generators` measures the generators' command lines at full size instead (nothing
else): `python -m rmaat_jax.data.listops --out DIR` (96K / 2K / 2K trees, a subprocess: wall
time including its start), the Pathfinder CLI on one process, `--pathfinder_num` hard images
including PNG writing (median of 3), and with `--workers 2`, `--pathfinder_workers_num`
images. Writes experiments/results/data_throughput_full.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import grain.python as grain
import numpy as np

from experiments.results_store import RESULTS_DIR, ROOT, provenance, provenance_line
from rmaat_jax.configs import default
from rmaat_jax.data import builders, listops, pathfinder, preprocess
from rmaat_jax.data.batching import GlobalBatchSampler
from rmaat_jax.data.builders import FASHION_MNIST_DIR
from rmaat_jax.data.pipeline import get_datasets, prepare_builder
from rmaat_jax.data.tasks import get_task, model_facts
from rmaat_jax.errors import DataFormatError


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


def full_generator_speed(scratch: pathlib.Path, pathfinder_num: int,
                         workers_num: int) -> dict[str, float | str]:
  """The generator CLIs at full size (see the module docstring)."""
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "-m", "rmaat_jax.data.listops", "--out",
                        str(scratch / "listops")], capture_output=True, text=True, check=True,
                       cwd=ROOT)
  listops_s = time.perf_counter() - start
  trees = 96000 + 2000 + 2000

  def pathfinder_run(name: str, num: int, workers: int) -> float:
    start = time.perf_counter()
    pathfinder.main(["--out", str(scratch / name), "--difficulty", "hard", "--num", str(num),
                     "--seed", "2", "--workers", str(workers)])
    return num / (time.perf_counter() - start)

  one_core = [pathfinder_run(f"pf1_{i}", pathfinder_num, 1) for i in range(3)]
  two_workers = pathfinder_run("pf2", workers_num, 2)
  return {"listops_full_wall_s": listops_s, "listops_full_ms_per_tree": 1000 * listops_s / trees,
          "listops_full_cli_output": out.stdout.strip(),
          "pathfinder_hard_images_per_s_1_process_incl_png_median_of_3":
              statistics.median(one_core),
          "pathfinder_hard_images_per_s_1_process_incl_png_runs": one_core,
          "pathfinder_hard_images_per_s_2_workers_incl_png": two_workers,
          "pathfinder_num": pathfinder_num, "pathfinder_workers_num": workers_num}


def _config(dataset: str, data_dir: pathlib.Path, **data):
  """rmaat_jax/configs/default.py reading `dataset` at its full length, batch 32."""
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


# --- 'before': the per-record pipeline that issue 13 item 6 replaced ----------------------
# A copy of the train loader of rmaat_jax/data/pipeline.py as of commit 3279b95, kept only to
# measure 'before' in the same run (the library has no switch back): TFDS decodes each
# record, this MapTransform pads / grayscales / checks each, grain.Batch stacks them, and
# grain's default ReadOptions read the records in 16 threads. `pipeline_throughput` checks
# that it gives the same batches as get_datasets.

class PerRecordToModelInputs(grain.MapTransform):
  """BEFORE (reference copy): a TFDS record -> {"inputs": int32 ids, "targets": int32}."""

  def __init__(self, kind: str, seq_len: int, pad_id: int, vocab_size: int, name: str):
    self.kind, self.seq_len, self.pad_id = kind, seq_len, max(pad_id, 0)
    self.vocab_size, self.name = vocab_size, name

  def map(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if self.kind == "tokens":
      ids = preprocess.pad_to(np.asarray(record["inputs"]), self.seq_len, self.pad_id)
    elif self.kind == "text":
      ids = preprocess.pad_to(preprocess.byte_ids(record["text"], builders.TEXT_MAX_LEN),
                              self.seq_len)
    elif self.kind == "image_rgb":
      ids = preprocess.grayscale_pixels(record["image"])
    elif self.kind == "pair":
      ids = np.stack([preprocess.pad_to(np.asarray(record[k]), self.seq_len)
                      for k in ("inputs_a", "inputs_b")])
    else:
      raise ValueError(f"unknown record kind {self.kind!r}")
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < 0 or high >= self.vocab_size:
      # A corrupt prepared copy would otherwise reach the embedding lookup, which under jit
      # reads out of range silently (NaN); the model checks again when called eagerly.
      bad = high if high >= self.vocab_size else low
      raise DataFormatError(
          f"{self.name}: an example holds token id {bad}, outside the task's vocabulary "
          f"[0, {self.vocab_size}); the prepared copy is corrupt or was built by other "
          "code: delete it under data.data_dir and prepare again")
    label = record["targets"] if "targets" in record else record["label"]
    return {"inputs": ids.astype(np.int32), "targets": np.asarray(label, np.int32)}


def per_record_train_loader(config) -> grain.DataLoader:
  """BEFORE (reference copy): get_datasets(config).train as built at commit 3279b95."""
  name = config.data.dataset
  task = get_task(name)
  builder, _ = prepare_builder(name, config.data)
  source = builder.as_data_source(split=task.splits[0])  # TFDS decodes each record
  transform = PerRecordToModelInputs(task.kind, model_facts(config)["seq_len"], task.pad_id,
                                     task.vocab_size, name)
  batch = int(config.train.batch_size)
  sampler = GlobalBatchSampler(len(source), batch, 0, 1, seed=int(config.train.seed))
  return grain.DataLoader(data_source=source, sampler=sampler, shard_options=grain.NoSharding(),
                          operations=[transform, grain.Batch(batch, drop_remainder=True)],
                          worker_count=int(config.data.num_workers))


# --- CIFAR-10 and IMDb in their real TFDS format, with random content ----------------------
# tfds.testing.mock_data hands out records TFDS already decoded, which skips the decoding
# the pipeline does; these builders write real ArrayRecord copies (PNG images, UTF-8 texts)
# under the catalog names, which get_datasets then reads as if TFDS had downloaded them.

def _random_cifar10(records: int):
  from tensorflow_datasets.image_classification import cifar

  class RandomCifar10(cifar.Cifar10, skip_registration=True):
    name = "cifar10"

    def _split_generators(self, dl_manager):
      return {"train": self._examples(records, 0), "test": self._examples(records // 10, 1)}

    def _examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        yield i, {"id": f"random_{seed}_{i}", "label": int(rng.integers(10)),
                  "image": rng.integers(0, 256, (32, 32, 3), np.uint8)}

  return RandomCifar10


def _random_imdb(records: int):
  from tensorflow_datasets.datasets.imdb_reviews import imdb_reviews_dataset_builder as imdb

  class RandomImdbReviews(imdb.Builder, skip_registration=True):
    name = "imdb_reviews"
    __module__ = imdb.__name__  # TFDS reads the builder's metadata files from its package

    def _split_generators(self, dl_manager):
      return {"train": self._examples(records, 0), "test": self._examples(records // 10, 1)}

    def _examples(self, n, seed):
      rng = np.random.default_rng(seed)
      letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     .,", np.uint8)
      for i in range(n):  # IMDb's lengths: median ~1 KB, a long tail past 4 KB
        size = int(min(rng.lognormal(7.0, 0.6), 13000))
        text = rng.choice(letters, size).tobytes().decode() + " é <br />"
        yield i, {"text": text, "label": int(rng.integers(2))}

  return RandomImdbReviews


def _prepare_random_catalog(builder_cls, data_dir: pathlib.Path) -> None:
  builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
  if not builder.is_prepared():
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(file_format="array_record")


def _loader_rate(loader, batch_size: int, batches: int) -> tuple[float, list]:
  """Examples per second after the first batch (files opened, workers started), and the
  first 3 batches."""
  it = iter(loader)
  first = [next(it) for _ in range(3)]
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start), first


def _same_batches(a: list, b: list) -> bool:
  return all(x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k])
             for x, y in zip(a, b, strict=True) for k in ("inputs", "targets"))


def pipeline_throughput(data_dir: pathlib.Path, batches: int, workers: list[int],
                        fake_records: int, repeats: int = 3) -> list[dict[str, Any]]:
  """Train examples/s of get_datasets (after) and of the per-record copy (before), per task
  and data.num_workers: the median of `repeats` runs, before and after alternating."""
  _write_aan(data_dir / "aan_synthetic")
  _prepare_random_catalog(_random_cifar10(fake_records), data_dir)
  _prepare_random_catalog(_random_imdb(fake_records), data_dir)
  tasks = [("listops (generated)", "listops", dict(generate=True)),
           ("pathfinder (generated, hard)", "pathfinder", dict(generate=True))]
  if os.path.isdir(FASHION_MNIST_DIR):
    tasks.append(("fashion_mnist (Debian)", "fashion_mnist", {}))
  tasks += [("retrieval (synthetic 4 KB AAN documents)", "retrieval",
             dict(manual_dir=str(data_dir / "aan_synthetic"))),
            ("image (cifar10 format, random images)", "image", {}),
            ("text (imdb_reviews format, random texts)", "text", {})]
  rows = []
  for label, dataset, data in tasks:
    for num_workers in workers:
      config = _config(dataset, data_dir, num_workers=num_workers, **data)
      after, before, same = [], [], True
      for _ in range(repeats):
        rate, new = _loader_rate(get_datasets(config).train, 32, batches)
        after.append(rate)
        rate, old = _loader_rate(per_record_train_loader(config), 32, batches)
        before.append(rate)
        same = same and _same_batches(new, old)
      info = get_datasets(config).info
      rows.append({"task": label, "train_records": info.num_examples["train"],
                   "num_workers": num_workers, "before": statistics.median(before),
                   "after": statistics.median(after), "before_runs": before,
                   "after_runs": after, "same_batches": same})
      print(f"{label}, num_workers={num_workers}: before {rows[-1]['before']:.0f}, after "
            f"{rows[-1]['after']:.0f} examples/s, same batches: {same}", flush=True)
  return rows


def read_cost(scratch: pathlib.Path, sizes=(4_000, 20_000, 60_000, 160_000)) -> list[dict]:
  """array_record's cost of reading records one per call (as TFDS's data source does) and
  32 per call (as the pipeline does), by the number of records in the file (1.3 KB each)."""
  from array_record.python import array_record_module

  rng = np.random.default_rng(0)
  payloads = [rng.integers(0, 256, 1300, np.uint8).tobytes() for _ in range(64)]
  rows = []
  for n in sizes:
    path = scratch / f"read_cost_{n}.array_record"
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for i in range(n):
      writer.write(payloads[i % len(payloads)])
    writer.close()
    reader = array_record_module.ArrayRecordReader(str(path), "readahead_buffer_size:0")
    keys = [int(k) for k in rng.permutation(n)[:32]]
    one = _median_time(lambda: [reader.read([k]) for k in keys], runs=5)  # noqa: B023
    batch = _median_time(lambda: reader.read(keys), runs=5)  # noqa: B023
    reader.close()
    path.unlink()
    rows.append({"records_in_file": n, "us_per_record_one_per_call": 1e6 * one / 32,
                 "us_per_record_32_per_call": 1e6 * batch / 32})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", type=pathlib.Path, default=None,
                      help="TFDS data dir to prepare into (default: a temporary one)")
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--workers", default="0,2",
                      help="data.num_workers values to measure the pipelines with")
  parser.add_argument("--fake_records", type=int, default=10000,
                      help="training records of the random CIFAR-10 / IMDb copies")
  parser.add_argument("--pipelines_only", action="store_true",
                      help="skip the generators")
  parser.add_argument("--full_generators", action="store_true",
                      help="time the generator CLIs at full size instead (nothing else)")
  parser.add_argument("--pathfinder_num", type=int, default=1000)
  parser.add_argument("--pathfinder_workers_num", type=int, default=4000)
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args()
  stamp = provenance(args.machine, module=__spec__.name)

  if args.full_generators:
    with tempfile.TemporaryDirectory() as scratch:
      full = full_generator_speed(pathlib.Path(scratch), args.pathfinder_num,
                                  args.pathfinder_workers_num)
    lines = ["| full-size generator CLI | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in full.items()]
    table = "\n".join(lines)
    print(table)
    meta = stamp
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_throughput_full.json").write_text(
        json.dumps({"meta": meta, "generators": full}, indent=1) + "\n")
    (out / "data_throughput_full.md").write_text(
        f"# data_throughput --full_generators ({meta['date']}, {meta['machine']})\n\n"
        f"{table}\n\n{provenance_line(meta)}\n")
    return

  from absl import flags
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags
  workers = [int(w) for w in args.workers.split(",")]
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = args.data_dir or pathlib.Path(scratch) / "tfds"
    generators = {} if args.pipelines_only else generator_speed(pathlib.Path(scratch))
    pipelines = pipeline_throughput(data_dir, args.batches, workers, args.fake_records)
    reads = read_cost(pathlib.Path(scratch))
  lines = []
  if generators:
    lines += ["| generator | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in generators.items()] + [""]
  lines += ["| pipeline (batch 32, 1 process) | train records | data.num_workers | before: "
            "per-record (examples/s) | after: batched | speed-up | same batches |",
            "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['task']} | {r['train_records']} | {r['num_workers']} | {r['before']:.0f} "
            f"| {r['after']:.0f} | {r['after'] / r['before']:.1f}x | {r['same_batches']} |"
            for r in pipelines]
  lines += ["", "| records in the ArrayRecord file | us per record, 1 per read call | "
            "us per record, 32 per read call |", "|---|---|---|"]
  lines += [f"| {r['records_in_file']} | {r['us_per_record_one_per_call']:.1f} | "
            f"{r['us_per_record_32_per_call']:.1f} |" for r in reads]
  table = "\n".join(lines)
  print(table)
  out = args.out_dir
  out.mkdir(parents=True, exist_ok=True)
  meta = {**stamp, "cpus": os.cpu_count(), "load_average_1_5_15_at_end": os.getloadavg(),
          "batch": 32, "batches": args.batches, "num_workers": workers,
          "fake_records": args.fake_records}
  (out / "data_throughput.json").write_text(json.dumps(
      {"meta": meta, "generators": generators, "pipelines": pipelines, "reads": reads},
      indent=1) + "\n")
  (out / "data_throughput.md").write_text(
      f"# data_throughput ({meta['date']}, {meta['machine']})\n\n{table}\n\n"
      f"{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
