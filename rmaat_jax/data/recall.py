"""Associative recall across segments: a generated task that measures what the memory carries.

Each example is T segments of S tokens. The first segment holds `num_pairs` key -> value
pairs (a key token immediately followed by its value token; distinct keys, at random
non-overlapping positions among filler tokens); segments 2 .. T - 1 hold filler only; the
last segment ends with a query marker followed by one of the stored keys. The label is that
key's value, uniform over `num_values` classes (chance = 1 / num_values). Nothing after the
first segment tells the answer, so a model must carry it across T - 1 segment boundaries in
its memory. With T = 1 pairs and query share one segment: a task any attention model solves
without memory, the control for the training budget. docs/data.md section 6.

    python -m rmaat_jax.data.recall --num_segments 8 --show 2

prints examples (the TFDS builder `builders.MemoryRecall` generates and caches the splits).
This module imports numpy only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections.abc import Iterable

import numpy as np

# Vocabulary: pad, NUM_FILLER filler tokens, the query marker, then keys, then values.
PAD_ID = 0
NUM_FILLER = 4
FIRST_FILLER = 1
QUERY_ID = FIRST_FILLER + NUM_FILLER
FIRST_KEY = QUERY_ID + 1
MAX_VOCAB = 256  # ids are stored and checked as bytes
SPLITS = ("train", "validation", "test")
CHUNK = 4096  # examples drawn at a time (part of the seeded output)


@dataclasses.dataclass(frozen=True)
class RecallSpec:
  """What one recall dataset is (`data.recall` in the config, plus the seed)."""

  num_segments: int = 4
  segment_len: int = 64
  num_pairs: int = 1
  num_keys: int = 16
  num_values: int = 10

  @property
  def seq_len(self) -> int:
    return self.num_segments * self.segment_len

  @property
  def first_value(self) -> int:
    return FIRST_KEY + self.num_keys

  @property
  def vocab_size(self) -> int:
    return self.first_value + self.num_values

  @property
  def pair_region(self) -> int:
    """Tokens of segment 1 that may hold pairs (with T = 1 the query takes the last two)."""
    return self.segment_len - (2 if self.num_segments == 1 else 0)

  def problems(self) -> list[tuple[str, str]]:
    """(field, why) for each value that makes no dataset; empty when the spec is valid."""
    found = []
    for name in ("num_segments", "segment_len", "num_pairs", "num_keys", "num_values"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        found.append((name, "must be a positive integer"))
    if found:
      return found
    if self.segment_len < 2:
      found.append(("segment_len", "must be at least 2 (the query is two tokens)"))
    if self.num_pairs > self.num_keys:
      found.append(("num_pairs", f"cannot exceed num_keys={self.num_keys} (keys are "
                                 "distinct)"))
    if 2 * self.num_pairs > self.pair_region:
      found.append(("num_pairs", f"{self.num_pairs} pairs need {2 * self.num_pairs} tokens; "
                                 f"segment 1 has {self.pair_region} for them"))
    if self.vocab_size > MAX_VOCAB:
      found.append(("num_values", f"num_keys + num_values = "
                                  f"{self.num_keys + self.num_values} exceeds "
                                  f"{MAX_VOCAB - FIRST_KEY}"))
    return found

  def check(self) -> None:
    problems = self.problems()
    if problems:
      field, why = problems[0]
      raise ValueError(f"{field}={getattr(self, field)!r}: {why}")


def draw(spec: RecallSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """n examples: tokens uint8 [n, T * S] and labels int64 [n] (vectorised; no dedup)."""
  t, s, p = spec.num_segments, spec.segment_len, spec.num_pairs
  tokens = rng.integers(FIRST_FILLER, FIRST_FILLER + NUM_FILLER, (n, t * s), dtype=np.uint8)
  keys = rng.random((n, spec.num_keys)).argsort(axis=1)[:, :p]  # distinct keys
  values = rng.integers(0, spec.num_values, (n, p))
  # Non-overlapping pairs: p sorted starts among region - p slots, shifted by their rank,
  # leave at least one token between consecutive starts for the value.
  starts = np.sort(rng.random((n, spec.pair_region - p)).argsort(axis=1)[:, :p], axis=1)
  starts = starts + np.arange(p)
  rows = np.arange(n)[:, None]
  tokens[rows, starts] = FIRST_KEY + keys
  tokens[rows, starts + 1] = spec.first_value + values
  query = rng.integers(0, p, n)
  tokens[:, -2] = QUERY_ID
  tokens[:, -1] = FIRST_KEY + keys[np.arange(n), query]
  return tokens, values[np.arange(n), query]


def _digest(row: np.ndarray) -> bytes:
  return hashlib.blake2b(row.tobytes(), digest_size=16).digest()


def generate_split(spec: RecallSpec, split: str, num_examples: int, seed: int,
                   exclude: Iterable[bytes] = ()) -> tuple[np.ndarray, np.ndarray]:
  """`num_examples` distinct examples of `split` (its own seeded stream, so one split does
  not depend on another's size); rows whose digest is in `exclude` (another split's) are
  dropped. Returns tokens uint8 [n, T * S] and labels int64 [n]."""
  spec.check()
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  rng = np.random.default_rng([int(seed), SPLITS.index(split)])
  seen, excluded = set(), set(exclude)
  tokens, labels = [], []
  while len(labels) < num_examples:
    chunk_tokens, chunk_labels = draw(spec, rng, CHUNK)
    before = len(labels)
    for row, label in zip(chunk_tokens, chunk_labels, strict=True):
      digest = _digest(row)
      if digest in seen or digest in excluded:
        continue
      seen.add(digest)
      tokens.append(row)
      labels.append(label)
      if len(labels) == num_examples:
        break
    if len(labels) == before:  # CHUNK draws found nothing new: the space is exhausted
      raise ValueError(
          f"the recall task {spec} has only {len(seen) + len(excluded)} distinct examples "
          f"(all found); {split} needs {num_examples} beside {len(excluded)} in earlier "
          "splits: use longer segments, more keys or values, or fewer examples")
  width = spec.seq_len
  return (np.stack(tokens) if tokens else np.zeros((0, width), np.uint8),
          np.asarray(labels, np.int64))


def generate_splits(spec: RecallSpec, sizes: tuple[int, int, int], seed: int
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Disjoint train / validation / test splits of the given sizes."""
  out, digests = {}, set()
  for split, n in zip(SPLITS, sizes, strict=True):
    out[split] = generate_split(spec, split, n, seed, digests)
    digests.update(_digest(row) for row in out[split][0])
  return out


def describe(spec: RecallSpec, tokens: np.ndarray, label: int) -> str:
  """One example as text: `.` filler, `?` the query marker, `kN` keys, `vN` values, with
  `|` between segments (filler runs shortened)."""
  names = {PAD_ID: "_", QUERY_ID: "?"}
  names.update({FIRST_FILLER + i: "." for i in range(NUM_FILLER)})
  names.update({FIRST_KEY + i: f"k{i}" for i in range(spec.num_keys)})
  names.update({spec.first_value + i: f"v{i}" for i in range(spec.num_values)})
  segments = []
  for segment in tokens.reshape(spec.num_segments, spec.segment_len):
    words = [names[int(t)] for t in segment]
    text = " ".join(words)
    segments.append(text if any(w != "." for w in words) else f". x{spec.segment_len}")
  return " | ".join(segments) + f"  ->  v{label}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rmaat_jax.data.recall",
                                   description="Print examples of the recall task.")
  for name, default in dataclasses.asdict(RecallSpec()).items():
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--show", type=int, default=3, help="how many examples to print")
  args = parser.parse_args(argv)
  spec = RecallSpec(**{k: getattr(args, k) for k in dataclasses.asdict(RecallSpec())})
  problems = spec.problems()
  if problems:
    field, why = problems[0]
    parser.exit(2, f"{parser.prog}: error: --{field}={getattr(spec, field)}: {why}\n")
  tokens, labels = generate_split(spec, "train", args.show, args.seed)
  for row, label in zip(tokens, labels, strict=True):
    print(describe(spec, row, int(label)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
