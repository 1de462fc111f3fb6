"""ListOps (Nangia & Bowman 2018, as LRA generates it): generator, file format, tokeniser.

The generator grows a batch of trees breadth-first in lockstep in numpy arrays, abandons a
tree as soon as its length reaches MAX_LENGTH, and evaluates and serialises the accepted
trees with vectorised passes, about 10x faster than the recursive original. Accepted trees
are distributed exactly as in the original: abandoning a tree early only skips draws that
could not change its rejection. The trees, the format and the statistics: docs/data.md
section 3; the tokeniser's convention: section 2.1.

    python -m rmaat_jax.data.listops --out DIR [--num_train N --num_val N --num_test N --seed S]

writes LRA's `basic_{train,val,test}.tsv`. This module imports numpy only so it starts fast.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from rmaat_jax.errors import DataFormatError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
MAX_DEPTH = 10  # the root is at depth 1; a node at MAX_DEPTH is always a leaf
MIN_ARGS, MAX_ARGS = 2, 10
OP_PROB = 0.25  # a node above MAX_DEPTH is an operator with this probability, else a leaf
MIN_LENGTH, MAX_LENGTH = 500, 2000  # keep 500 < L < 2000, L = leaves + 2 per operator
ROOTS_PER_BATCH = 4096  # part of the seeded output: changing it changes the data
SPLIT_FILES = ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv")
HEADER = "Source\tTarget"

# Model vocabulary (docs/data.md section 2.1): parentheses are dropped, `]` is kept.
VOCAB = ["<pad>", "<unk>", *"0123456789", *OPERATORS, END]
VOCAB_SIZE = len(VOCAB)
PAD_ID, UNK_ID = 0, 1
_SKIP = -1
_TOKEN_IDS = {token: i for i, token in enumerate(VOCAB) if i > UNK_ID}
_TOKEN_IDS.update({"(": _SKIP, ")": _SKIP})

# Internal symbols: 0-9 values, 10-13 operators, 14 END; vocabulary id = symbol + 2.
_OP_SYM, _END_SYM = 10, 14

# LRA's format nests arguments to the left, `( ( ( [MAX 2 ) 9 ) ] )`: in pre-order an
# operator with k children opens with k + 1 parentheses, every non-root subtree is followed
# by `)`, and an operator closes with `] )`. So each model token maps to one fixed piece.
_CLOSE_CHILD_PIECE = 10 + len(OPERATORS) * (MAX_ARGS - MIN_ARGS + 1)
_CLOSE_ROOT_PIECE = _CLOSE_CHILD_PIECE + 1


def _open_piece(op: str, arity: int) -> str:
  return "( " * (arity + 1) + op


_PIECES = np.array(
    [f"{v} )" for v in range(10)]
    + [_open_piece(op, k) for op in OPERATORS for k in range(MIN_ARGS, MAX_ARGS + 1)]
    + ["] ) )", "] )"], dtype=object)


# ---------------------------------------------------------------------------------------
# Generator


@dataclass
class GeneratorStats:
  """Counts over the batches drawn so far (every root of a drawn batch counts)."""

  roots: int = 0  # root draws
  accepted: int = 0  # trees with MIN_LENGTH < L < MAX_LENGTH
  dropped: int = 0  # accepted trees dropped as repeats or as members of `exclude`


@dataclass
class TreeBatch:
  """Accepted trees of one batch, in root order, their model tokens concatenated."""

  tokens: np.ndarray  # uint8 vocabulary ids of all trees, end to end
  offsets: np.ndarray  # int64 [n + 1]: tree i is tokens[offsets[i]:offsets[i + 1]]
  labels: np.ndarray  # int64 [n]
  pieces: np.ndarray  # int16 index into _PIECES for each token
  num_roots: int

  def sources(self) -> list[str]:
    """The trees in LRA's serialised format."""
    pieces = _PIECES[self.pieces].tolist()
    bounds = self.offsets.tolist()
    return [" ".join(pieces[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _grow(rng: np.random.Generator, num_roots: int):
  """Draws num_roots trees level by level; returns levels (tree, sym, arity) and lengths.

  Each level lists its nodes by tree, then left to right, so the children of a level's
  operators are consecutive runs of the next level, in the operators' order.
  """
  tree = np.arange(num_roots, dtype=np.int64)
  length = np.zeros(num_roots, np.int64)
  alive = np.ones(num_roots, bool)
  levels = []
  for depth in range(1, MAX_DEPTH + 1):
    n = tree.size
    if n == 0:
      break
    sym = rng.integers(0, 10, n, dtype=np.int64)
    arity = np.zeros(n, np.int64)
    if depth < MAX_DEPTH:
      ops = np.flatnonzero(rng.random(n) < OP_PROB)
      sym[ops] = _OP_SYM + rng.integers(0, len(OPERATORS), ops.size)
      arity[ops] = rng.integers(MIN_ARGS, MAX_ARGS + 1, ops.size)
    else:
      ops = np.zeros(0, np.int64)
    levels.append((tree, sym, arity))
    op_tree = tree[ops]
    length += np.bincount(tree, minlength=num_roots) + np.bincount(op_tree, minlength=num_roots)
    # Every child still to draw adds at least one token: abandon a tree once the bound hits
    # MAX_LENGTH, so the long tail of huge trees costs almost nothing.
    pending = np.bincount(op_tree, weights=arity[ops], minlength=num_roots)
    alive &= length + pending < MAX_LENGTH
    grow = ops[alive[op_tree]]
    tree = np.repeat(tree[grow], arity[grow])
  return levels, np.where(alive, length, MAX_LENGTH)


def _apply(op: np.ndarray, arity: np.ndarray, child_val: np.ndarray) -> np.ndarray:
  """Values of operators (op 0-3, arity) over their consecutive runs of child values."""
  n = op.size
  seg = np.repeat(np.arange(n), arity)
  hist = np.bincount(seg * 10 + child_val, minlength=n * 10).reshape(n, 10)
  present = hist > 0
  lo = present.argmax(1)
  hi = 9 - present[:, ::-1].argmax(1)
  cum = hist.cumsum(1)
  # The r-th smallest (0-based) is the number of values v with cum[v] <= r; int(np.median)
  # of an even count truncates the mean of the two middle ones.
  a = (cum <= ((arity - 1) // 2)[:, None]).sum(1)
  b = (cum <= (arity // 2)[:, None]).sum(1)
  sm = (hist @ np.arange(10)) % 10
  return np.choose(op, [lo, hi, (a + b) // 2, sm])


def sample_batch(rng: np.random.Generator, num_roots: int = ROOTS_PER_BATCH) -> TreeBatch:
  """Draws num_roots roots and returns the trees with MIN_LENGTH < L < MAX_LENGTH."""
  levels, length = _grow(rng, num_roots)
  accepted = (length > MIN_LENGTH) & (length < MAX_LENGTH)
  kept = []
  for tree, sym, arity in levels:
    mask = accepted[tree]
    if not mask.any():
      break
    kept.append((sym[mask], arity[mask]))
  if not kept:
    empty = np.zeros(0, np.int64)
    return TreeBatch(np.zeros(0, np.uint8), np.zeros(1, np.int64), empty,
                     np.zeros(0, np.int16), num_roots)

  # Bottom up: values and subtree sizes in tokens (leaf 1, operator 2 + children).
  vals, sizes = [None] * len(kept), [None] * len(kept)
  for d in reversed(range(len(kept))):
    sym, arity = kept[d]
    val, size = sym.copy(), np.ones(sym.size, np.int64)
    ops = np.flatnonzero(arity)
    if ops.size:
      k = arity[ops]
      val[ops] = _apply(sym[ops] - _OP_SYM, k, vals[d + 1])
      size[ops] = 2 + np.add.reduceat(sizes[d + 1], np.cumsum(k) - k)
    vals[d], sizes[d] = val, size

  # Top down: pre-order position of each node; a first child follows its parent's operator
  # token, each next child follows its elder sibling's subtree.
  offsets = np.concatenate([[0], np.cumsum(sizes[0])])
  pos = offsets[:-1]
  tokens = np.empty(offsets[-1], np.uint8)
  pieces = np.empty(offsets[-1], np.int16)
  for d, (sym, arity) in enumerate(kept):
    ops = np.flatnonzero(arity)
    tokens[pos] = sym + 2
    pieces[pos] = np.where(arity > 0, 10 + (sym - _OP_SYM) * (MAX_ARGS - MIN_ARGS + 1)
                           + arity - MIN_ARGS, sym)
    close = pos[ops] + sizes[d][ops] - 1
    tokens[close] = _END_SYM + 2
    pieces[close] = _CLOSE_ROOT_PIECE if d == 0 else _CLOSE_CHILD_PIECE
    if d + 1 < len(kept):
      k = arity[ops]
      before = np.cumsum(sizes[d + 1]) - sizes[d + 1]
      pos = np.repeat(pos[ops] + 1 - before[np.cumsum(k) - k], k) + before
  return TreeBatch(tokens, offsets, vals[0], pieces, num_roots)


def iter_examples(seed: int, exclude: Iterable[str] | None = None,
                  stats: GeneratorStats | None = None) -> Iterator[tuple[str, int]]:
  """Endless stream of distinct (source, label) ListOps examples, reproducible from seed.

  Batch b is drawn from its own stream, default_rng([seed, b]). Sources in `exclude` are
  skipped (e.g. another split's examples).
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  exclude = exclude if isinstance(exclude, (set, frozenset)) else set(exclude or ())
  stats = stats if stats is not None else GeneratorStats()
  seen = set()  # 128-bit digests of the token sequences: equal digests = equal trees
  for b in itertools.count():
    batch = sample_batch(np.random.default_rng([int(seed), b]))
    stats.roots += batch.num_roots
    stats.accepted += batch.labels.size
    bounds = batch.offsets.tolist()
    for i, (source, label) in enumerate(zip(batch.sources(), batch.labels.tolist(),
                                            strict=True)):
      key = hashlib.blake2b(batch.tokens[bounds[i]:bounds[i + 1]].tobytes(),
                            digest_size=16).digest()
      if key in seen or source in exclude:
        stats.dropped += 1
        continue
      seen.add(key)
      yield source, label


def generate(num_examples: int, seed: int,
             exclude: Iterable[str] | None = None) -> list[tuple[str, int]]:
  """num_examples distinct (source, label) pairs; a prefix of the output for a larger count."""
  if num_examples < 0:
    raise ValueError(f"num_examples must be >= 0, got {num_examples}")
  return list(itertools.islice(iter_examples(seed, exclude), num_examples))


def serialize(expression: str) -> str:
  """Bracket notation (`[MAX 2 [MIN 3 4 ] 9 ]`; `]` may touch a value) -> LRA's format."""
  tokens = expression.replace(END, f" {END} ").split()
  arity = [0] * len(tokens)
  stack, done = [], False
  for i, token in enumerate(tokens):
    if done:
      raise ValueError(f"more than one tree in {expression!r}")
    if token == END:
      if not stack:
        raise ValueError(f"unbalanced {END!r} in {expression!r}")
      if arity[stack.pop()] == 0:
        raise ValueError(f"operator without arguments in {expression!r}")
    elif token in OPERATORS or (len(token) == 1 and token.isdigit()):
      if stack:
        arity[stack[-1]] += 1
      if token in OPERATORS:
        stack.append(i)
    else:
      raise ValueError(f"unknown token {token!r} in {expression!r}")
    done = not stack
  if stack or not tokens:
    raise ValueError(f"incomplete expression {expression!r}")
  if len(tokens) == 1:
    return tokens[0]
  pieces, depth = [], 0
  for token, k in zip(tokens, arity, strict=True):
    if token in OPERATORS:
      pieces.append(_open_piece(token, k))
      depth += 1
    elif token == END:
      depth -= 1
      pieces.append("] ) )" if depth else "] )")
    else:
      pieces.append(f"{token} )")
  return " ".join(pieces)


# ---------------------------------------------------------------------------------------
# Tokeniser and TSV files (used by the TFDS builder for LRA's files and generated ones)


def tokenize(source: str) -> np.ndarray:
  """LRA source -> int32 vocabulary ids; `(`/`)` dropped, unknown tokens -> UNK_ID."""
  get = _TOKEN_IDS.get
  ids = np.array([get(t, UNK_ID) for t in source.split()], np.int32)
  return ids[ids != _SKIP]


def encode(source: str, max_len: int) -> np.ndarray:
  """tokenize, then truncate or right-pad with PAD_ID to max_len: int32 [max_len]."""
  if max_len < 0:
    raise ValueError(f"max_len must be >= 0, got {max_len}")
  ids = tokenize(source)[:max_len]
  out = np.full(max_len, PAD_ID, np.int32)
  out[:ids.size] = ids
  return out


def iter_tsv(path: str | os.PathLike) -> Iterator[tuple[str, int]]:
  """(source, label) rows of an LRA ListOps TSV; DataFormatError names file and line if malformed.

  Blank lines are skipped. Universal newlines also read LRA's csv-written `\\r\\n` files.
  """
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n")
    if header != HEADER:
      raise DataFormatError(f"{path}:1: expected header {HEADER!r}, got {header[:60]!r}")
    for lineno, line in enumerate(f, start=2):
      line = line.rstrip("\n")
      if not line.strip():
        continue
      fields = line.split("\t")
      if len(fields) != 2:
        raise DataFormatError(f"{path}:{lineno}: expected 2 tab-separated columns (Source, Target),"
                         f" got {len(fields)}")
      source, target = fields
      try:
        label = int(target)
      except ValueError:
        raise DataFormatError(
            f"{path}:{lineno}: Target {target[:20]!r} is not an integer") from None
      if not 0 <= label <= 9:
        raise DataFormatError(f"{path}:{lineno}: Target {label} is outside 0-9")
      if not source.strip():
        raise DataFormatError(f"{path}:{lineno}: empty Source")
      yield source, label


def read_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
  """All rows of an LRA ListOps TSV (see iter_tsv)."""
  return list(iter_tsv(path))


def write_splits(out_dir: str | os.PathLike, sizes: tuple[int, int, int],
                 seed: int) -> GeneratorStats:
  """Writes distinct, disjoint train/val/test files; each appears only once complete."""
  os.makedirs(out_dir, exist_ok=True)
  stats = GeneratorStats()
  examples = iter_examples(seed, stats=stats)
  temps = []
  try:
    for name, n in zip(SPLIT_FILES, sizes, strict=True):
      temps.append(os.path.join(out_dir, f".{name}.{os.getpid()}.tmp"))
      with open(temps[-1], "x", encoding="utf-8", newline="\n") as f:
        f.write(HEADER + "\n")
        f.writelines(f"{s}\t{y}\n" for s, y in itertools.islice(examples, n))
    for name, temp in zip(SPLIT_FILES, temps, strict=True):
      os.replace(temp, os.path.join(out_dir, name))
  except BaseException:
    for temp in temps:
      if os.path.exists(temp):
        os.remove(temp)
    raise
  return stats


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message}\n")  # one line, no usage block


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog="python -m rmaat_jax.data.listops",
                   description="Generate LRA ListOps basic_{train,val,test}.tsv.")
  parser.add_argument("--out", required=True, help="output directory (created)")
  parser.add_argument("--num_train", type=int, default=96000)
  parser.add_argument("--num_val", type=int, default=2000)
  parser.add_argument("--num_test", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  for name in ("num_train", "num_val", "num_test", "seed"):
    if getattr(args, name) < 0:
      parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    parser.error(f"--out {args.out} exists and is not a directory")
  sizes = (args.num_train, args.num_val, args.num_test)
  start = time.perf_counter()
  stats = write_splits(args.out, sizes, args.seed)
  seconds = time.perf_counter() - start
  total = sum(sizes)
  print(f"wrote {sizes[0]} train / {sizes[1]} val / {sizes[2]} test examples to {args.out} "
        f"in {seconds:.1f} s ({1e3 * seconds / max(total, 1):.3f} ms per tree); "
        f"{stats.accepted / max(stats.roots, 1):.2%} of {stats.roots} root draws accepted, "
        f"{stats.dropped} dropped as repeats")
  return 0


if __name__ == "__main__":
  sys.exit(main())
