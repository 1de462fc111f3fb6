"""ListOps generator, LRA file format and tokeniser (docs/data.md sections 2.1 and 3).

Labels are checked with an evaluator written here from that description alone: it parses LRA's
binarised format strictly and shares no code with the module.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rmaat_jax.data import listops

REPO = pathlib.Path(__file__).resolve().parents[1]
OPS = {"[MIN", "[MAX", "[MED", "[SM"}


# --- independent parser and evaluator -------------------------------------------------


def parse_lra(source):
  """LRA's `( left right )` binary form -> (op, [children]) / int. Strict: asserts on junk."""
  tokens = source.split(" ")
  pos = 0

  def binary():
    nonlocal pos
    token = tokens[pos]
    pos += 1
    if token != "(":
      return token
    left, right = binary(), binary()
    assert tokens[pos] == ")", f"expected ) at token {pos}"
    pos += 1
    return (left, right)

  def tree(node):
    if isinstance(node, str):
      assert node in set("0123456789"), node
      return int(node)
    left, right = node
    assert right == "]", right  # an operator's pair chain is closed by ( ... ] )
    children = []
    while isinstance(left, tuple):  # arguments are nested to the left: ((OP c1) c2) ...
      left, child = left
      children.append(tree(child))
    assert left in OPS, left
    return (left, children[::-1])

  root = binary()
  assert pos == len(tokens), "trailing tokens"
  return tree(root)


def evaluate(node):
  if isinstance(node, int):
    return node
  op, children = node
  v = sorted(evaluate(c) for c in children)
  if op == "[MIN":
    return v[0]
  if op == "[MAX":
    return v[-1]
  if op == "[SM":
    return sum(v) % 10
  n = len(v)
  return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) // 2


def shape(node, depth=1):
  """(leaves, operators, max depth, arities) of a tree; the root is at depth 1."""
  if isinstance(node, int):
    return 1, 0, depth, []
  leaves, ops, deepest, arities = 0, 1, depth, [len(node[1])]
  for child in node[1]:
    lv, op, d, ar = shape(child, depth + 1)
    leaves, ops, deepest, arities = leaves + lv, ops + op, max(deepest, d), arities + ar
  return leaves, ops, deepest, arities


def to_brackets(node):
  if isinstance(node, int):
    return str(node)
  return f"{node[0]} " + " ".join(to_brackets(c) for c in node[1]) + " ]"


# --- generated data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
  stats = listops.GeneratorStats()
  examples = []
  for example in listops.iter_examples(0, stats=stats):
    examples.append(example)
    if len(examples) == 2000:
      return examples, stats


def test_serialize_lra_format():
  assert listops.serialize("[MAX 2 9]") == "( ( ( [MAX 2 ) 9 ) ] )"
  # [MIN 3 [MAX 2 9] 1] by the left-nesting rule, built by hand:
  # t0 = ( [MIN 3 ), t1 = ( t0 [MAX 2 9] ), t2 = ( t1 1 ), t = ( t2 ] )
  nested = "( ( ( ( [MIN 3 ) ( ( ( [MAX 2 ) 9 ) ] ) ) 1 ) ] )"
  assert listops.serialize("[MIN 3 [MAX 2 9 ] 1 ]") == nested
  assert parse_lra(nested) == ("[MIN", [3, ("[MAX", [2, 9]), 1])
  assert evaluate(parse_lra(nested)) == 1
  assert listops.serialize("7") == "7"
  for bad in ("[MAX 2 9", "[MAX 2 ] ]", "[MAX ]", "[FOO 1 2 ]", "[MAX 1 2 ] 3"):
    with pytest.raises(ValueError):
      listops.serialize(bad)


def test_labels_and_structure(sample):
  examples, _ = sample
  for source, label in examples[:300]:
    tree = parse_lra(source)
    assert evaluate(tree) == label
    leaves, ops, depth, arities = shape(tree)
    length = leaves + 2 * ops
    assert 500 < length < 2000
    assert depth <= 10
    assert min(arities) >= 2 and max(arities) <= 10
    # The vectorised serialiser agrees with the reference rule, and so does the tokeniser.
    assert listops.serialize(to_brackets(tree)) == source
    assert len(listops.tokenize(source)) == length


def test_lengths_distinct_and_statistics(sample):
  examples, stats = sample
  lengths = np.array([sum(t not in "()" for t in s.split(" ")) for s, _ in examples])
  assert lengths.min() > 500 and lengths.max() < 2000
  assert len({s for s, _ in examples}) == len(examples)
  # docs/data.md section 3.4: ~8 % of roots accepted, mean L ~1036 (the bounds also hold
  # the older ~1058 reference), labels 0 and 9 ~17 % each.
  assert 0.06 < stats.accepted / stats.roots < 0.10
  assert abs(lengths.mean() - 1058) < 80
  assert 850 < np.median(lengths) < 1100
  freq = np.bincount([y for _, y in examples], minlength=10) / len(examples)
  assert 0.13 < freq[0] < 0.21 and 0.13 < freq[9] < 0.21
  assert np.all((freq[1:9] > 0.04) & (freq[1:9] < 0.13))


def test_seeded_reproducibility():
  a = listops.generate(20, seed=0)
  assert a == listops.generate(20, seed=0)
  assert a[:5] == listops.generate(5, seed=0)
  b = listops.generate(20, seed=1)
  assert not {s for s, _ in a} & {s for s, _ in b}
  with pytest.raises(ValueError):
    listops.generate(3, seed=-1)


def test_exclude_and_repeats_dropped(monkeypatch):
  first = listops.generate(10, seed=0)
  rest = listops.generate(30, seed=0, exclude={s for s, _ in first})
  assert rest == listops.generate(40, seed=0)[10:]

  # Every tree of a repeated batch is dropped.
  a = listops.sample_batch(np.random.default_rng(1), 512)
  b = listops.sample_batch(np.random.default_rng(2), 512)
  batches = iter([a, a, b])
  monkeypatch.setattr(listops, "sample_batch", lambda rng: next(batches))
  stats = listops.GeneratorStats()
  n = len(a.labels) + len(b.labels)
  got = [e for _, e in zip(range(n), listops.iter_examples(0, stats=stats), strict=False)]
  assert [s for s, _ in got] == a.sources() + b.sources()
  assert stats.dropped == len(a.labels)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
  out = tmp_path / "new" / "listops"
  cmd = [sys.executable, "-m", "rmaat_jax.data.listops", "--out", str(out),
         "--num_train", "30", "--num_val", "5", "--num_test", "7", "--seed", "3"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert "30 train" in result.stdout
  assert sorted(os.listdir(out)) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
  splits = {}
  for name, n in (("train", 30), ("val", 5), ("test", 7)):
    path = out / f"basic_{name}.tsv"
    assert path.read_text().split("\n", 1)[0] == "Source\tTarget"
    splits[name] = listops.read_tsv(path)
    assert len(splits[name]) == n
  everything = splits["train"] + splits["val"] + splits["test"]
  assert len({s for s, _ in everything}) == 42  # distinct, so the splits are disjoint
  assert everything == listops.generate(42, seed=3)
  for source, label in splits["val"]:
    assert evaluate(parse_lra(source)) == label

  bad = subprocess.run(cmd[:-1] + ["-2"], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2
  assert len(bad.stderr.strip().splitlines()) == 1 and "--seed" in bad.stderr


@pytest.mark.parametrize("args, word", [
    (["--num_train", "-1"], "--num_train"),
    (["--num_val", "x"], "--num_val"),
    (["--num_train", "1"], "--out"),  # --out missing
])
def test_cli_bad_arguments(tmp_path, capsys, args, word):
  if word != "--out":
    args = ["--out", str(tmp_path)] + args
  with pytest.raises(SystemExit) as exit_info:
    listops.main(args)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and word in err
  assert not list(tmp_path.iterdir())


def test_cli_out_is_a_file(tmp_path, capsys):
  target = tmp_path / "file"
  target.write_text("")
  with pytest.raises(SystemExit) as exit_info:
    listops.main(["--out", str(target), "--num_train", "1"])
  assert exit_info.value.code == 2


# --- tokeniser and TSV reading ------------------------------------------------------------


def test_vocabulary():
  assert listops.VOCAB_SIZE == len(listops.VOCAB) == 17
  assert listops.PAD_ID == 0
  assert listops.VOCAB[2:12] == [str(d) for d in range(10)]
  assert listops.VOCAB[12:] == ["[MIN", "[MAX", "[MED", "[SM", "]"]


def test_tokenize_and_encode():
  ids = listops.tokenize("( ( ( [MAX 2 ) 9 ) ] )")
  assert ids.dtype == np.int32
  assert ids.tolist() == [13, 4, 11, 16]
  assert listops.tokenize("[SM 0 [MED 9 ] [MIN 1 ]").tolist() == [15, 2, 14, 11, 16, 12, 3, 16]
  assert listops.tokenize("( [FIRST 12 x ] )").tolist() == [1, 1, 1, 16]
  assert listops.tokenize("").tolist() == []
  enc = listops.encode("( ( ( [MAX 2 ) 9 ) ] )", 6)
  assert enc.dtype == np.int32 and enc.tolist() == [13, 4, 11, 16, 0, 0]
  assert listops.encode("( ( ( [MAX 2 ) 9 ) ] )", 2).tolist() == [13, 4]
  assert listops.encode("( ( ( [MAX 2 ) 9 ) ] )", 0).shape == (0,)


def test_read_tsv_formats(tmp_path):
  path = tmp_path / "crlf.tsv"  # LRA wrote its files with csv.writer: \r\n line ends
  path.write_bytes(b"Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n( ( ( [MIN 2 ) 9 ) ] )\t2\r\n")
  assert listops.read_tsv(path) == [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [MIN 2 ) 9 ) ] )", 2)]


@pytest.mark.parametrize("body, line, message", [
    ("Source\tTarget\n( [SM 1 ) ] )\t1\n( [SM 1 ) ] )\n", 3, "columns"),
    ("Source\tTarget\n( [SM 1 ) ] )\tone\n", 2, "not an integer"),
    ("Source\tTarget\n( [SM 1 ) ] )\t1\t2\n", 2, "columns"),
    ("Source\tTarget\n( [SM 1 ) ] )\t10\n", 2, "outside"),
    ("Source\tTarget\n\t3\n", 2, "empty"),
    ("Input\tLabel\n( [SM 1 ) ] )\t1\n", 1, "header"),
])
def test_read_tsv_errors_name_file_and_line(tmp_path, body, line, message):
  path = tmp_path / "bad.tsv"
  path.write_text(body)
  with pytest.raises(ValueError, match=message) as err:
    listops.read_tsv(path)
  assert f"{path}:{line}:" in str(err.value)
