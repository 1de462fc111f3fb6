"""Input pipelines: `get_datasets(config)` -> train / validation / test grain loaders.

Every task is read through TFDS: the catalog builders `cifar10` and `imdb_reviews`, or our
builders (builders.py) for the files LRA ships. Datasets are prepared once as ArrayRecord
and read with `builder.as_data_source()` + grain, which needs no TensorFlow. Batches are
`{"inputs": int32 [B, seq_len] (or [B, 2, seq_len]), "targets": int32 [B]}` with B the
per-process batch. The training order is a pure function of (train.seed, step): grain's
IndexSampler shuffles deterministically, and the iterator state is checkpointable
(`iterator.get_state()` / `set_state()`), so a resumed run sees the same batches.

grain orders, shards and checkpoints record keys; each batch's records are then read with
one ArrayRecord call (BatchReader) and decoded, padded and checked by numpy in one go
(ToModelInputs): 6,000-11,000 examples/s per process at batch 32 on one core, 6-9x the
per-record reading before (experiments/data_throughput.py). data.num_workers runs this in
grain worker processes.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import io
import logging
import os
import pathlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source, array_record_module
from tensorflow_datasets.proto import tf_example_pb2

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


# What each record kind reads: the id fields, in order ("pair": two documents).
_INPUT_FIELDS = {"tokens": ("inputs",), "text": ("text",), "image_rgb": ("image",),
                 "pair": ("inputs_a", "inputs_b")}


def _field_reader(feature) -> tuple[str, Any, tuple[int, ...]] | None:
  """How ToModelInputs reads a feature from a parsed tf.train.Example, as TFDS would:
  (how, dtype, shape); None: a feature only TFDS can decode."""
  info = feature.get_serialized_info()
  if isinstance(feature, tfds.features.ClassLabel):
    return "label", None, ()
  if isinstance(feature, (tfds.features.Text, tfds.features.Image)):
    return ("bytes" if isinstance(feature, tfds.features.Text) else "image"), None, ()
  if (isinstance(feature, tfds.features.Tensor) and len(info.shape) == 1
      and np.issubdtype(info.np_dtype, np.integer)):  # ids stored as a plain int64 list
    return "ints", info.np_dtype, tuple(-1 if d is None else d for d in info.shape)
  return None


class ToModelInputs:
  """TFDS records -> one batch {"inputs": int32 [B, seq_len] (or [B, 2, seq_len]),
  "targets": int32 [B]}: the `batch_fn` of the loaders' grain.Batch.

  The loaders read records undecoded (the serialized tf.train.Example in the ArrayRecord
  file), and this reads the fields it needs straight from the parsed proto, as TFDS would
  but without its per-feature machinery (a ListOps record: 8 us instead of 26; two 4 KB
  Retrieval documents: 47 instead of 87); padding, grayscale and the vocabulary check run
  once per batch. Records TFDS already decoded (dicts: tfds.testing.mock_data gives these)
  are read as they are, and features other than integer ids, labels, texts and images go
  through TFDS's decoding. `map` turns one decoded record into one example.
  """

  def __init__(self, kind: str, seq_len: int, pad_id: int, vocab_size: int, name: str,
               features: tfds.features.FeaturesDict | None = None):
    if kind not in _INPUT_FIELDS:
      raise ValueError(f"unknown record kind {kind!r}")
    self.kind, self.seq_len, self.pad_id = kind, seq_len, max(pad_id, 0)
    self.vocab_size, self.name, self.features = vocab_size, name, features
    self._fields = _INPUT_FIELDS[kind]
    self._label, self._readers = "targets", None
    if features is not None:
      self._label = "targets" if "targets" in features else "label"
      readers = [_field_reader(features[k]) if k in features else None
                 for k in self._fields + (self._label,)]
      if None not in readers and readers[-1][0] == "label":  # else TFDS decodes records
        self._readers = readers[:-1]

  def _decode(self, record: bytes | Mapping[str, Any]) -> tuple[list[Any], Any]:
    """One record -> ([its input fields], its label)."""
    if isinstance(record, Mapping):
      label = record["targets"] if "targets" in record else record["label"]
      return [record[k] for k in self._fields], label
    if self._readers is None:
      return self._decode(self.features.deserialize_example_np(record))
    feature = tf_example_pb2.Example.FromString(record).features.feature
    values = []
    for key, (how, dtype, shape) in zip(self._fields, self._readers, strict=True):
      field = feature[key]
      if how == "ints":  # TFDS's np.array(values, dtype).reshape(shape)
        values.append(np.array(field.int64_list.value, dtype).reshape(shape))
      elif how == "bytes":
        values.append(field.bytes_list.value[0])
      else:  # "image": TFDS's own PNG decoding (PIL or OpenCV)
        values.append(self.features[key].decode_example_np(field.bytes_list.value[0]))
    return values, feature[self._label].int64_list.value[0]

  def __call__(self, records: Sequence[bytes | Mapping[str, Any]]) -> dict[str, np.ndarray]:
    decoded = [self._decode(r) for r in records]
    fields = [d[0] for d in decoded]
    b, length = len(fields), self.seq_len
    if self.kind == "tokens":
      ids = preprocess.pad_rows([np.asarray(f[0]) for f in fields], length, self.pad_id)
    elif self.kind == "text":
      ids = preprocess.byte_rows([f[0] for f in fields], builders.TEXT_MAX_LEN, length)
    elif self.kind == "image_rgb":
      ids = preprocess.grayscale_batch(np.stack([f[0] for f in fields]))
    else:  # "pair"
      ids = np.empty((b, 2, length), np.int32)
      for j in range(2):
        preprocess.pad_rows([np.asarray(f[j]) for f in fields], length, out=ids[:, j])
    self._check_vocabulary(ids)
    return {"inputs": ids, "targets": np.array([d[1] for d in decoded], np.int32)}

  def _check_vocabulary(self, ids: np.ndarray) -> None:
    """Every id in [0, vocab_size): once per batch; the first bad example is named."""
    if not ids.size or (ids.min() >= 0 and ids.max() < self.vocab_size):
      return
    for example in ids:
      low, high = int(example.min()), int(example.max())
      if low < 0 or high >= self.vocab_size:
        # A corrupt prepared copy would otherwise reach the embedding lookup, which under
        # jit reads out of range silently (NaN); the model checks again when called eagerly.
        bad = high if high >= self.vocab_size else low
        raise DataFormatError(
            f"{self.name}: an example holds token id {bad}, outside the task's vocabulary "
            f"[0, {self.vocab_size}); the prepared copy is corrupt or was built by other "
            "code: delete it under data.data_dir and prepare again")

  def map(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One decoded record -> {"inputs": int32 ids, "targets": int32}."""
    batch = self([record])
    return {"inputs": batch["inputs"][0], "targets": batch["targets"][0]}


class RecordKeys:
  """A grain data source of record keys: the loader's batch_fn (ReadAndDecode) reads the
  records of a whole batch at once. Its repr is the TFDS source's, which grain stores in
  (and checks against) the iterator state, so checkpoints written before still restore."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, key: int) -> int:
    return key

  def __repr__(self) -> str:
    return repr(self.source)


class BatchReader:
  """Reads a batch of records of a TFDS ArrayRecord split, with one read per file.

  TFDS's data source reads one record per call of array_record's reader, and such a call
  costs ~2 us per 1000 records in the file (array_record 0.8: 330 us in a 160K-record file,
  10 us in a 4K one) while a call reading 32 records costs about as much as one reading one;
  its batched read (`__getitems__`) starts a thread pool per call (~3 ms). Sources that are
  not ArrayRecord files (tfds.testing.mock_data) are read a record at a time.
  """

  def __init__(self, source):
    self.source = source
    self._files: list[tuple[str, int]] = []  # (path, position of the split's first record)
    self._starts: list[int] = []  # the split's key of each file's first record
    if (isinstance(getattr(source, "data_source", None),
                   array_record_data_source.ArrayRecordDataSource)
        and source.deserialize_method == tfds.decode.DeserializeMethod.RAW_BYTES):
      start = 0
      for instruction in source.dataset_info.splits[source.split].file_instructions:
        self._files.append((os.fspath(instruction.filename), instruction.skip))
        self._starts.append(start)
        start += instruction.take
    self._readers: dict[int, Any] = {}

  def __getstate__(self) -> dict[str, Any]:  # grain workers open their own readers
    return {**self.__dict__, "_readers": {}}

  def read(self, keys: Sequence[int]) -> list[Any]:
    """The records of `keys` (raw bytes, or whatever a non-ArrayRecord source gives)."""
    if not self._files:
      return [self.source[key] for key in keys]
    by_file: dict[int, list[tuple[int, int]]] = {}
    for i, key in enumerate(keys):
      if not 0 <= key < len(self.source):
        raise IndexError(f"record key {key} outside [0, {len(self.source)})")
      f = bisect.bisect_right(self._starts, key) - 1
      by_file.setdefault(f, []).append((i, key - self._starts[f] + self._files[f][1]))
    records: list[Any] = [None] * len(keys)
    for f, items in by_file.items():
      if f not in self._readers:
        self._readers[f] = array_record_module.ArrayRecordReader(
            self._files[f][0], "readahead_buffer_size:0")  # TFDS's option: random access
      for (i, _), record in zip(items, self._readers[f].read([p for _, p in items]),
                                strict=True):
        records[i] = record
    return records


class ReadAndDecode:
  """grain.Batch's batch_fn: record keys -> one batch of model inputs."""

  def __init__(self, reader: BatchReader, transform: ToModelInputs):
    self.reader, self.transform = reader, transform

  def __call__(self, keys: Sequence[int]) -> dict[str, np.ndarray]:
    return self.transform(self.reader.read(keys))


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
  """The split's records, undecoded: ToModelInputs decodes them a batch at a time."""
  try:
    return builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except NotImplementedError as e:  # an older TFRecord copy in the same data_dir
    raise DataMissingError(
        f"{name}: {builder.data_dir} holds a TFRecord copy; random access needs "
        "ArrayRecord. Delete that folder or choose another data.data_dir, then "
        "prepare again.") from e


# Records are read one after another in the loader's thread (or in each of data.num_workers
# processes). grain's default, a pool of 16 threads reading 500 records ahead, cost ~0.5 ms
# per record on 2 cores (the GIL and futures, for reads of ~20 us), 4-5x the rest together.
_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


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
  transform = ToModelInputs(task.kind, seq_len, task.pad_id, task.vocab_size, name,
                            features=builder.info.features)
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
    batch = grain.Batch(per_process, drop_remainder=train,
                        batch_fn=ReadAndDecode(BatchReader(source), transform))
    return grain.DataLoader(data_source=RecordKeys(source), sampler=sampler, shard_options=shard,
                            operations=[batch], worker_count=workers,
                            read_options=_READ_OPTIONS)

  info = DataInfo(
      dataset=name, source=source, vocab_size=task.vocab_size,
      num_classes=task.num_classes, seq_len=seq_len, pad_id=task.pad_id,
      dual_encoder=task.kind == "pair",
      num_examples={s: len(src) for s, src in zip(("train", "validation", "test"), sources,
                                                  strict=True)})
  return Datasets(loader(sources[0], train=True), loader(sources[1], train=False),
                  loader(sources[2], train=False), info)
