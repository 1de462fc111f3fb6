"""TFDS records to model batches: decode, pad and check a whole batch with numpy.

The training order (GlobalBatchSampler) is a function of the seed; a batch's records are
read with one ArrayRecord call per file (BatchReader) and decoded, padded and checked in one
go (ToModelInputs). loaders.py builds grain loaders of whole batches from these.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source, array_record_module
from tensorflow_datasets.proto import tf_example_pb2

from rmaat_jax.data import builders, preprocess
from rmaat_jax.errors import DataFormatError

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


class BatchReader:
  """Reads a batch of records of a TFDS ArrayRecord split, with one read per file.

  TFDS's data source reads one record per call of array_record's reader, and such a call
  costs ~2 us per 1000 records in the file (array_record 0.8: 330 us in a 160K-record file,
  10 us in a 4K one) while a call reading 32 records costs about as much as one reading one;
  its batched read (`__getitems__`) starts a thread pool per call (~3 ms). Sources that are
  not ArrayRecord files (tfds.testing.mock_data) are read a record at a time.
  """

  def __init__(self, source):
    self.source, self.num_records = source, len(source)
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

  def __getstate__(self) -> dict[str, Any]:
    # grain workers open their own readers; with the files known they need no TFDS source
    # (unpickling one rebuilds its builder, and logs about it, in every worker).
    return {**self.__dict__, "_readers": {}, "source": None if self._files else self.source}

  def read(self, keys: Sequence[int]) -> list[Any]:
    """The records of `keys` (raw bytes, or whatever a non-ArrayRecord source gives)."""
    if not self._files:
      return [self.source[key] for key in keys]
    by_file: dict[int, list[tuple[int, int]]] = {}
    for i, key in enumerate(keys):
      if not 0 <= key < self.num_records:
        raise IndexError(f"record key {key} outside [0, {self.num_records})")
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


class GlobalBatchSampler:
  """Training order as global batches: process p of P reads slice p of every global batch.

  The global order is grain's IndexSampler over all records (no sharding), so the batches
  the model sees do not depend on how many processes read them: 2 processes x 2 devices
  train exactly like 1 process x 4 devices, and 1 process reproduces IndexSampler's own
  order. Local index i is element i % b of this process's slice of global batch i // b
  (b = global batch / P); loaders.TrainBatches reads it a batch at a time.
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
