"""grain loaders whose unit of work is a whole batch, so that `data.num_workers` changes
nothing but speed.

grain hands the records of its sampler to worker processes in turn and batches inside each
worker: with per-record sampling, the batches would depend on the number of workers. Here
the sampler yields batch indices, one grain record per batch: worker w reads and decodes
batch b = w, w + W, ... whole, and grain returns the batches in order, so 0, 1 or 8 workers
give the same sequence. A training iterator's checkpointed position is then simply the
number of batches consumed, which `TrainIterator.set_state` re-expresses for the current
number of workers: a run resumes under any `data.num_workers`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grain.python as grain

from rmaat_jax.data.batching import BatchReader, GlobalBatchSampler, ToModelInputs


class BatchIndices:
  """A grain data source of batch indices (element b is b); its repr is the TFDS source's,
  which grain stores in, and checks against, the iterator state. It keeps that repr, not
  the source: worker processes receive it pickled, and unpickling a TFDS source rebuilds
  its builder (and logs about it) in every worker."""

  def __init__(self, source, num_batches: int):
    self.source_repr, self.num_batches = repr(source), num_batches

  def __len__(self) -> int:
    return self.num_batches

  def __getitem__(self, index: int) -> int:
    return index

  def __repr__(self) -> str:
    return self.source_repr


class TrainBatches:
  """Sampler of training batches: batch b is this process's slice of global batch b of
  GlobalBatchSampler's order (a function of the seed alone)."""

  def __init__(self, order: GlobalBatchSampler, per_process: int):
    self.order, self.per_process = order, per_process

  def __len__(self) -> int:
    return len(self.order) // self.per_process

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    return grain.RecordMetadata(index=index, record_key=index)

  def keys(self, batch: int) -> list[int]:
    first = batch * self.per_process
    return [self.order[first + i].record_key for i in range(self.per_process)]

  def __repr__(self) -> str:  # grain checks it against a restored iterator state
    return f"TrainBatches({self.order!r}, per_process={self.per_process})"


class EvalBatches:
  """One ordered pass over this process's shard of an evaluation split, in batches (the
  last one may be short). Shards are grain's `even_split` with the remainder dropped, so
  every process runs as many evaluation steps."""

  def __init__(self, num_records: int, batch_size: int, process_index: int,
               process_count: int):
    size = num_records // process_count
    self.start, self.end, self.batch_size = size * process_index, size * (process_index + 1), \
        batch_size
    self.num_batches = -(-size // batch_size)

  def keys(self, batch: int) -> list[int]:
    first = self.start + batch * self.batch_size
    return list(range(first, min(first + self.batch_size, self.end)))


class Packed:
  """A batch as one opaque object. grain's worker processes copy the NumPy arrays of what
  they return into shared memory, which the parent unlinks asynchronously when the arrays
  are freed; batches still in flight or alive at exit then leak, and the interpreter's exit
  prints warnings and SharedMemoryArray.__del__ tracebacks. A batch of token ids is small
  (256 KiB at 32 x 2048): pickled through the workers' queue instead, it leaves nothing."""

  __slots__ = ("batch",)

  def __init__(self, batch: dict[str, Any]):
    self.batch = batch


class ReadBatch(grain.MapTransform):
  """Batch index -> the model inputs of that batch's records (read and decoded at once)."""

  def __init__(self, keys: Callable[[int], list[int]], reader: BatchReader,
               transform: ToModelInputs):
    self.keys, self.reader, self.transform = keys, reader, transform

  def map(self, batch: int) -> Packed:
    return Packed(self.transform(self.reader.read(self.keys(batch))))


_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _loader(source, num_batches: int, sampler, keys, transform: ToModelInputs,
            workers: int) -> grain.DataLoader:
  return grain.DataLoader(
      data_source=BatchIndices(source, num_batches), sampler=sampler,
      shard_options=grain.NoSharding(),
      operations=[ReadBatch(keys, BatchReader(source), transform)], worker_count=workers,
      # Records are batches, read one after another in the loader's thread (or in each
      # worker): grain's default pool of 16 threads reading ahead cost more than the reads.
      read_options=_READ_OPTIONS)


class TrainLoader:
  """The endless, shuffled training loader; `iter()` gives a TrainIterator."""

  def __init__(self, source, transform: ToModelInputs, global_batch: int, process_index: int,
               process_count: int, seed: int, workers: int):
    per_process = global_batch // process_count
    self.sampler = TrainBatches(GlobalBatchSampler(len(source), global_batch, process_index,
                                                   process_count, seed), per_process)
    self.workers = workers
    self.loader = _loader(source, len(self.sampler), self.sampler, self.sampler.keys,
                          transform, workers)

  def __iter__(self) -> TrainIterator:
    return TrainIterator(iter(self.loader), self.workers, self.sampler)


class EvalLoader:
  """One pass in order over this process's shard (see EvalBatches); each `iter()` starts a
  new pass."""

  def __init__(self, source, transform: ToModelInputs, batch_size: int, process_index: int,
               process_count: int, workers: int):
    batches = EvalBatches(len(source), batch_size, process_index, process_count)
    sampler = grain.IndexSampler(num_records=batches.num_batches,
                                 shard_options=grain.NoSharding(), shuffle=False, num_epochs=1)
    self.loader = _loader(source, batches.num_batches, sampler, batches.keys, transform,
                          workers)

  def __iter__(self) -> BatchIterator:
    return BatchIterator(iter(self.loader))


def position(state: dict[str, Any]) -> int:
  """Batches a grain DataLoader state has returned (one record per batch, no sharding)."""
  return max(int(i) for i in state["last_seen_indices"].values()) + 1


def state_at(state: dict[str, Any], batches: int, workers: int) -> dict[str, Any]:
  """`state` rewritten as grain would write it after `batches` batches with `workers`
  workers (grain's DataLoader state: global index of each worker's last element)."""
  if workers == 0:
    last_seen, last_worker = {"0": batches - 1}, -1
  else:
    produced = [max(0, -(-(batches - w) // workers)) for w in range(workers)]
    last_seen = {str(w): w - workers + produced[w] * workers for w in range(workers)}
    last_worker = batches % workers - 1
  return {**state, "last_seen_indices": last_seen, "last_worker_index": last_worker,
          "worker_count": workers}


class BatchIterator(Iterator):
  """grain's DataLoader iterator, yielding the batches (not their Packed wrappers)."""

  def __init__(self, iterator):
    self.iterator = iterator

  def __next__(self) -> dict[str, Any]:
    return next(self.iterator).batch

  def close(self) -> None:
    close(self)


class TrainIterator(BatchIterator):
  """The training iterator; its checkpoint restores under any number of workers."""

  def __init__(self, iterator, workers: int, sampler: TrainBatches):
    super().__init__(iterator)
    self.workers, self.sampler = workers, sampler

  def get_state(self) -> bytes:
    return self.iterator.get_state()

  def set_state(self, state: bytes) -> None:
    saved = json.loads(state.decode())
    batches = position(saved)
    if str(saved.get("sampler", "")).startswith("GlobalBatchSampler("):
      # Written by the per-record loaders of earlier versions: without workers its position
      # counts records of the same batches in the same order; with workers, batches were
      # drawn per worker and the order cannot be continued.
      if saved.get("worker_count"):
        raise ValueError(
            "this checkpoint's data position was written with data.num_workers="
            f"{saved['worker_count']} by an earlier rmaat_jax, whose batches depended on the "
            "number of workers; it cannot be continued exactly: finish the run with that "
            "version, or start a fresh --workdir")
      batches //= self.sampler.per_process
      saved["sampler"] = repr(self.sampler)
    converted = state_at(saved, batches, self.workers)
    self.iterator.set_state(json.dumps(converted).encode())

  def start_prefetch(self) -> None:  # grain's checkpoint handler calls it after a restore
    self.iterator.start_prefetch()


def close(iterator) -> None:
  """Stops a grain iterator's worker processes and frees the shared memory of the batches
  they had prefetched. An endless training iterator, or an evaluation pass cut short, would
  otherwise leave that to the interpreter's exit, which prints leaked-memory warnings and
  SharedMemoryArray.__del__ tracebacks. (grain's DataLoaderIterator exposes no close of its
  own: its dataset iterator's is used.)"""
  if isinstance(iterator, BatchIterator):
    iterator = iterator.iterator
  inner = getattr(iterator, "_iterator", None)
  if inner is not None and hasattr(inner, "close"):
    inner.close()
