"""Input pipelines: `get_datasets(config)` -> train / validation / test grain loaders.

Every task is read through TFDS: the catalog builders `cifar10` and `imdb_reviews`, or our
builders (builders.py) for the files LRA ships. Datasets are prepared once as ArrayRecord
and read with `builder.as_data_source()` + grain, which needs no TensorFlow. Batches are
`{"inputs": int32 [B, seq_len] (or [B, 2, seq_len]), "targets": int32 [B]}` with B the
per-process batch. The training order is a pure function of (train.seed, step): grain's
IndexSampler shuffles deterministically, and the iterator state is checkpointable
(`iterator.get_state()` / `set_state()`), so a resumed run sees the same batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import pathlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from rmaat_jax import console
from rmaat_jax.data import builders, listops, pathfinder, preprocess
from rmaat_jax.data.tasks import TASKS, Task, get_task, model_facts
from rmaat_jax.errors import DataFormatError, DataMissingError

__all__ = ["DataInfo", "Datasets", "DataMissingError", "TASKS", "get_datasets"]


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model and the logs need to know about the data: the model's vocabulary,
  classes, padding id, dual encoder and length come from here, not from the config."""

  dataset: str
  source: str  # where the examples come from, for logs and results
  vocab_size: int
  num_classes: int
  seq_len: int
  pad_id: int
  dual_encoder: bool
  num_examples: dict[str, int]

  def model_facts(self) -> dict[str, Any]:
    """The fields of the model's config that the data sets (tasks.MODEL_FACTS)."""
    return dict(vocab_size=self.vocab_size, num_classes=self.num_classes,
                pad_id=self.pad_id, dual_encoder=self.dual_encoder, seq_len=self.seq_len)


@dataclasses.dataclass
class Datasets:
  train: grain.DataLoader  # endless, shuffled
  validation: grain.DataLoader  # one pass, in order, last batch may be short
  test: grain.DataLoader
  info: DataInfo


class ToModelInputs(grain.MapTransform):
  """A TFDS record -> {"inputs": int32 ids, "targets": int32}."""

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


class GlobalBatchSampler:
  """Training order as global batches: process p of P reads slice p of every global batch.

  The global order is grain's IndexSampler over all records (no sharding), so the batches
  the model sees do not depend on how many processes read them: 2 processes x 2 devices
  train exactly like 1 process x 4 devices, and 1 process reproduces IndexSampler's own
  order. The DataLoader asks for local indices 0, 1, 2, ...; local index i is element i % b
  of this process's slice of global batch i // b (b = global batch / P).
  """

  def __init__(self, num_records: int, global_batch: int, process_index: int,
               process_count: int, seed: int):
    self._order = grain.IndexSampler(num_records, grain.NoSharding(), shuffle=True,
                                     num_epochs=None, seed=seed)
    self._global, self._local = global_batch, global_batch // process_count
    self._process_index, self._process_count = process_index, process_count
    self._num_records, self._seed = num_records, seed

  def __len__(self) -> int:
    return len(self._order)

  def __repr__(self) -> str:  # grain checks it against a restored iterator state
    return (f"GlobalBatchSampler(num_records={self._num_records}, global_batch="
            f"{self._global}, process={self._process_index}/{self._process_count}, "
            f"seed={self._seed})")

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    step, offset = divmod(index, self._local)
    record = self._order[step * self._global + self._process_index * self._local + offset]
    return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)


def _data_dir(data_config) -> pathlib.Path:
  return pathlib.Path(data_config.data_dir or tfds.core.constants.DATA_DIR).expanduser()


def _generated_source(name: str, task: Task, data_config) -> tuple[Any, pathlib.Path, str]:
  """Builder config and manual dir of generated data, generating the files if absent."""
  sizes = tuple(int(n) for n in data_config.generate_sizes)
  seed = int(data_config.generate_seed)
  if task.generator == "listops":
    config_name = f"generated_{sizes[0]}_{sizes[1]}_{sizes[2]}_seed{seed}"
    builder_config = tfds.core.BuilderConfig(name=config_name)
  else:
    difficulty = data_config.pathfinder_difficulty
    config_name = f"generated_{difficulty}_{sizes[0]}_{sizes[1]}_{sizes[2]}_seed{seed}"
    builder_config = builders.PathfinderConfig(
        name=config_name, contour_length=pathfinder.CONTOUR_LENGTHS[difficulty],
        split_sizes=sizes)
  out = _data_dir(data_config) / "generated" / name / config_name
  done = out / "COMPLETE"
  if not done.exists():
    logging.info("Generating %s into %s (sizes %s, seed %d).", name, out, sizes, seed)
    if task.generator == "listops":
      listops.write_splits(out, sizes, seed)
    else:
      pathfinder.write_dataset(out, difficulty, sum(sizes), seed,
                               workers=int(data_config.generate_workers))
    done.write_text("generated by rmaat_jax\n")
  source = f"GENERATED {name} ({config_name}, rmaat_jax.data.{task.generator})"
  return builder_config, out, source


def _download_and_prepare(builder, **kwargs) -> None:
  """TFDS's preparation, with its progress bars and banners only at --verbosity >= 1."""
  logging.info("Preparing %s as ArrayRecord in %s.", builder.name, builder.data_dir)
  if not console.quiet():
    builder.download_and_prepare(**kwargs)
    return
  tfds.disable_progress_bar()
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(**kwargs)


PROBE_TIMEOUT_S = 10.0


def check_reachable(url: str) -> str | None:
  """None if `url`'s server answers (any HTTP status), else why not. Honours the proxy
  environment variables, as TFDS's downloader does."""
  try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                           timeout=PROBE_TIMEOUT_S).close()
  except urllib.error.HTTPError:
    return None  # the server answered
  except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
    reason = getattr(e, "reason", e)
    return f"{type(reason).__name__}: {reason}"
  return None


def _download_catalog(builder, task: Task, name: str, data_dir: pathlib.Path) -> None:
  """TFDS downloads and prepares a catalog dataset; fails within seconds without internet.

  Offline, TFDS's downloader would retry for minutes and end in a long traceback, leaving
  an empty dataset folder and a `.tmp` download behind. The source is probed first, and
  whatever a failed preparation created under data_dir is removed.
  """
  def failure(why: str) -> DataMissingError:
    return DataMissingError(f"{name}: cannot download TFDS '{task.catalog}' ({why}); "
                            f"offline, {task.offline}")

  why = check_reachable(task.download_url)
  if why is not None:
    raise failure(f"{task.download_url} is unreachable: {why}")
  downloads = data_dir / "downloads"
  before = {p for folder in (data_dir, downloads) if folder.is_dir() for p in folder.iterdir()}
  try:
    _download_and_prepare(builder, file_format="array_record")
  except Exception as e:  # network errors, a truncated archive, a full disk
    for folder in (downloads, data_dir):
      for path in (set(folder.iterdir()) if folder.is_dir() else set()) - before:
        if path.is_dir():
          shutil.rmtree(path, ignore_errors=True)
        else:
          path.unlink()
    if data_dir.is_dir() and not any(data_dir.iterdir()) and not before:
      data_dir.rmdir()
    text = str(e).strip().splitlines()
    raise failure(f"{type(e).__name__}: {text[0][:200] if text else ''}") from e


def prepare_builder(name: str, data_config) -> tuple[tfds.core.DatasetBuilder, str]:
  """Returns a prepared ArrayRecord builder for dataset `name` and a source description."""
  task = get_task(name)
  data_dir = _data_dir(data_config)
  if task.catalog:
    builder = tfds.builder(task.catalog, data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
      if not data_config.download:
        raise DataMissingError(
            f"{name}: TFDS dataset '{task.catalog}' is not prepared in {builder.data_dir} "
            "and data.download=False: rerun with --config.data.download=True on a machine "
            f"with internet; offline, {task.offline}")
      _download_catalog(builder, task, name, data_dir)
    return builder, f"TFDS {task.catalog} ({builder.data_dir})"
  if data_config.generate:
    builder_config, manual_dir, source = _generated_source(name, task, data_config)
  else:
    builder_config = None
    # Without data.manual_dir: Debian's folder for Fashion-MNIST, TFDS's manual dir else.
    default = (builders.FASHION_MNIST_DIR if task.builder == "FashionMnistDebian"
               else data_dir / "downloads" / "manual")
    manual_dir = pathlib.Path(data_config.manual_dir or default).expanduser()
    source = f"{task.description} from {manual_dir}"
  builder = getattr(builders, task.builder)(config=builder_config, data_dir=str(data_dir),
                                            file_format="array_record")
  if not builder.is_prepared():
    builder.locate_files(manual_dir)  # missing files: DataMissingError, before TFDS runs
    _download_and_prepare(
        builder, download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder, source


def _data_source(builder, split: str, name: str):
  try:
    return builder.as_data_source(split=split)
  except NotImplementedError as e:  # an older TFRecord copy in the same data_dir
    raise DataMissingError(
        f"{name}: {builder.data_dir} holds a TFRecord copy; random access needs "
        "ArrayRecord. Delete that folder or choose another data.data_dir, then "
        "prepare again.") from e


def get_datasets(config, *, process_index: int = 0, process_count: int = 1,
                 barrier: Callable[[], None] | None = None) -> Datasets:
  """Train / validation / test loaders for `config.data.dataset`, for this process.

  `config` must have passed config_checks.validate_config (the command line does it first).
  Each process gets train.batch_size / process_count examples per batch: its slice of
  every global training batch, its shard of the evaluation splits. With several processes,
  `barrier` (called by all of them) lets process 0 generate and prepare the data before the
  others look, so that processes sharing a data_dir never write the same files.
  """
  data_config, name = config.data, config.data.dataset
  task = get_task(name)
  seq_len = model_facts(config)["seq_len"]
  batch_size = int(config.train.batch_size)
  if barrier is not None and process_index > 0:
    barrier()
  builder, source = prepare_builder(name, data_config)
  if barrier is not None and process_index == 0:
    barrier()
  sources = [_data_source(builder, split, name) for split in task.splits]
  transform = ToModelInputs(task.kind, seq_len, task.pad_id, task.vocab_size,
                            name)
  workers = int(data_config.num_workers)
  per_process = batch_size // process_count

  def loader(source, *, train: bool) -> grain.DataLoader:
    if train:
      sampler = GlobalBatchSampler(len(source), batch_size, process_index, process_count,
                                   seed=int(config.train.seed))
      shard = grain.NoSharding()  # the sampler gives each process its slice
    else:  # one pass in order; equal shards, so every process runs as many eval steps
      shard = grain.ShardOptions(process_index, process_count, drop_remainder=True)
      sampler = grain.IndexSampler(num_records=len(source), shard_options=shard,
                                   shuffle=False, num_epochs=1)
    return grain.DataLoader(data_source=source, sampler=sampler, shard_options=shard,
                            operations=[transform, grain.Batch(per_process, drop_remainder=train)],
                            worker_count=workers)

  info = DataInfo(
      dataset=name, source=source, vocab_size=task.vocab_size,
      num_classes=task.num_classes, seq_len=seq_len, pad_id=task.pad_id,
      dual_encoder=task.kind == "pair",
      num_examples={s: len(src) for s, src in zip(("train", "validation", "test"), sources,
                                                  strict=True)})
  return Datasets(loader(sources[0], train=True), loader(sources[1], train=False),
                  loader(sources[2], train=False), info)
