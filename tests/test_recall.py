"""The recall task: an independent checker recomputes every label and the layout of every
example; determinism, disjoint splits, the config checks and the pipeline end to end."""

import numpy as np
import pytest
from data_fixtures import make_config

from rmaat_jax.data import recall
from rmaat_jax.data.tasks import check_data_config, model_facts
from rmaat_jax.errors import ConfigError

# The vocabulary as docs/data.md section 6 states it (independent of the module's constants).
PAD, FILLER, QUERY, FIRST_KEY = 0, (1, 2, 3, 4), 5, 6


def check_example(tokens: np.ndarray, label: int, t: int, s: int, pairs: int, keys: int,
                  values: int) -> None:
  """Asserts the layout of one example and that `label` is the queried key's value."""
  first_value = FIRST_KEY + keys
  assert tokens.shape == (t * s,) and PAD not in tokens
  assert tokens[-2] == QUERY and FIRST_KEY <= tokens[-1] < first_value, tokens[-2:]
  head, rest = tokens[:s - 2 if t == 1 else s], tokens[s:]
  if t > 1:  # segments 2 .. T: filler, but for the query closing the last one
    assert np.isin(rest[:-2], FILLER).all()
  else:
    assert np.array_equal(tokens[s - 2:], tokens[-2:])
  # Segment 1: filler and `key value` pairs, nothing else.
  stored = {}
  i = 0
  while i < len(head):
    token = int(head[i])
    if token in FILLER:
      i += 1
      continue
    assert FIRST_KEY <= token < first_value, f"unexpected id {token} at {i}"
    assert i + 1 < len(head) and first_value <= head[i + 1] < first_value + values
    assert token not in stored, "keys must be distinct"
    stored[token] = int(head[i + 1]) - first_value
    i += 2
  assert len(stored) == pairs
  assert int(tokens[-1]) in stored
  assert label == stored[int(tokens[-1])]


SPECS = [recall.RecallSpec(num_segments=1, segment_len=16, num_pairs=3),
         recall.RecallSpec(num_segments=3, segment_len=12, num_pairs=6, num_keys=6,
                           num_values=4),
         recall.RecallSpec(num_segments=5, segment_len=8, num_pairs=1, num_keys=2,
                           num_values=3)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"T{s.num_segments}_p{s.num_pairs}")
def test_every_example_and_label_checks_out(spec):
  splits = recall.generate_splits(spec, (300, 50, 50), seed=3)
  for tokens, labels in splits.values():
    assert tokens.dtype == np.uint8 and labels.dtype == np.int64
    for row, label in zip(tokens, labels, strict=True):
      check_example(row, int(label), spec.num_segments, spec.segment_len, spec.num_pairs,
                    spec.num_keys, spec.num_values)
  # Labels cover every class about uniformly (300 draws over <= 10 classes).
  counts = np.bincount(splits["train"][1], minlength=spec.num_values)
  assert counts.min() > 0.5 * counts.mean()


def test_a_checker_that_reads_the_wrong_value_fails():
  # Negative control: labelling with the *other* stored value must fail the checker.
  spec = recall.RecallSpec(num_segments=2, segment_len=16, num_pairs=2, num_values=10)
  tokens, labels = recall.generate_split(spec, "train", 50, seed=0)
  first_value = FIRST_KEY + spec.num_keys
  wrong = []
  for row in tokens:
    query = row[-1]
    at = [i for i in range(spec.segment_len) if row[i] >= FIRST_KEY and row[i] < first_value
          and row[i] != query]
    wrong.append(int(row[at[0] + 1]) - first_value)
  failures = 0
  for row, label, bad in zip(tokens, labels, wrong, strict=True):
    if bad != label:
      with pytest.raises(AssertionError):
        check_example(row, bad, 2, 16, 2, spec.num_keys, spec.num_values)
      failures += 1
  assert failures > 30


def test_seeded_splits_are_deterministic_disjoint_and_independent_of_other_sizes():
  spec = recall.RecallSpec(num_segments=2, segment_len=8, num_pairs=1, num_keys=2,
                           num_values=2)
  a = recall.generate_splits(spec, (200, 40, 40), seed=1)
  b = recall.generate_splits(spec, (200, 40, 40), seed=1)
  for split in recall.SPLITS:
    np.testing.assert_array_equal(a[split][0], b[split][0])
    np.testing.assert_array_equal(a[split][1], b[split][1])
  # Each split has its own stream: the test set does not depend on the train size.
  np.testing.assert_array_equal(recall.generate_splits(spec, (20, 5, 40), seed=1)["test"][0],
                                a["test"][0])
  assert not np.array_equal(recall.generate_splits(spec, (20, 5, 40), seed=2)["test"][0],
                            a["test"][0])


def test_duplicates_are_dropped_and_an_exhausted_space_is_an_error():
  # T = 1, S = 4, one pair of 2 keys x 2 values: `k v ? k`, only 4 distinct examples.
  spec = recall.RecallSpec(num_segments=1, segment_len=4, num_pairs=1, num_keys=2,
                           num_values=2)
  splits = recall.generate_splits(spec, (2, 1, 1), seed=0)
  rows = {row.tobytes() for tokens, _ in splits.values() for row in tokens}
  assert len(rows) == 4
  with pytest.raises(ValueError, match="only 4 distinct examples"):
    recall.generate_splits(spec, (3, 1, 1), seed=0)


@pytest.mark.parametrize("overrides, field, message", [
    ({"num_pairs": 17}, "num_pairs", "cannot exceed num_keys=16"),
    ({"num_pairs": 3, "segment_len": 5}, "num_pairs", "need 6 tokens; segment 1 has 5"),
    ({"segment_len": 1}, "segment_len", "at least 2"),
    ({"num_values": 240}, "num_values", "exceeds"),
    ({"num_keys": 0}, "num_keys", "positive integer"),
])
def test_bad_recall_values_name_the_field(tmp_path, overrides, field, message):
  config = make_config("recall", tmp_path, generate=True)
  config.data.recall.update(overrides)
  with pytest.raises(ConfigError, match=rf"data\.recall\.{field}={overrides[field]}: "
                                        rf".*{message}"):
    check_data_config(config)


def test_model_segments_must_match_the_data(tmp_path):
  config = make_config("recall", tmp_path, generate=True)
  config.model.num_segments = 8
  with pytest.raises(ConfigError, match=r"model\.num_segments=8 does not match "
                                        r"data\.recall\.num_segments=4"):
    check_data_config(config)
  config.model.num_segments, config.data.generate = 4, False
  with pytest.raises(ConfigError, match="always generated"):
    check_data_config(config)


def test_the_data_sets_vocabulary_classes_and_length(tmp_path):
  config = make_config("recall", tmp_path, generate=True)
  config.data.recall.update(num_segments=4, segment_len=32, num_keys=8, num_values=5)
  assert model_facts(config) == dict(vocab_size=FIRST_KEY + 8 + 5, num_classes=5, pad_id=PAD,
                                     dual_encoder=False, seq_len=128)


def test_pipeline_batches_are_the_generators_examples(tmp_path):
  from rmaat_jax.data import get_datasets

  config = make_config("recall", tmp_path, generate=True, generate_sizes=(24, 8, 8))
  config.data.recall.update(num_segments=4, segment_len=16, num_pairs=2)
  datasets = get_datasets(config)
  assert datasets.info.seq_len == 64 and datasets.info.num_classes == 10
  assert "GENERATED recall" in datasets.info.source
  spec = recall.RecallSpec(num_segments=4, segment_len=16, num_pairs=2)
  want_tokens, want_labels = recall.generate_split(spec, "test", 8, seed=0)
  batches = list(datasets.test)
  tokens = np.concatenate([b["inputs"] for b in batches])
  labels = np.concatenate([b["targets"] for b in batches])
  assert tokens.dtype == np.int32 and tokens.shape == (8, 64)
  # TFDS stores a split in its own (hashed) order: compare the examples as a set.
  got = sorted((row.tobytes(), int(y)) for row, y in zip(tokens.astype(np.uint8), labels,
                                                         strict=True))
  want = sorted((row.tobytes(), int(y)) for row, y in zip(want_tokens, want_labels,
                                                          strict=True))
  assert got == want
  for row, label in zip(tokens, labels, strict=True):
    check_example(row, int(label), 4, 16, 2, 16, 10)


def test_a_trained_model_is_evaluated_at_other_lengths_only_when_asked(tmp_path):
  from rmaat_jax import configs, train

  config = configs.load("memory_recall", "cpu")
  config.model.update(emb_dim=16, num_heads=2, mlp_dim=32, num_segments=2)
  config.data.recall.update(num_segments=2, segment_len=8)
  config.data.update(data_dir=str(tmp_path / "tfds"), generate_sizes=(16, 8, 8))
  config.train.update(num_steps=2, batch_size=4, eval_every=2, checkpoint_every=2,
                      warmup_steps=1, num_eval_batches=1)
  workdir = str(tmp_path / "work")
  trained = train.train_and_evaluate(config, workdir)

  longer = config.copy_and_resolve_references()
  longer.model.num_segments = longer.data.recall.num_segments = 6
  longer.data.generate_sizes = (4, 4, 12)
  with pytest.raises(ConfigError, match="add --eval_other_length"):
    train.evaluate_workdir(longer, workdir)
  results = train.evaluate_workdir(longer, workdir, other_length=True)
  assert (results["num_segments"], results["seq_len"], results["num_test_examples"]) == (6, 48,
                                                                                         12)
  assert results["best_step"] == trained["best_step"]
  assert (tmp_path / "work" / "eval_results_T6.json").exists()
  # The segment length is what the parameters were trained on: it may not change.
  other = config.copy_and_resolve_references()
  other.data.recall.segment_len = 12
  with pytest.raises(ConfigError):
    train.evaluate_workdir(other, workdir, other_length=True)
  # Nor may anything else (here the retention factor).
  other = longer.copy_and_resolve_references()
  other.model.retention = "paper"
  with pytest.raises(ConfigError, match=r"model\.retention \"none\" -> \"paper\""):
    train.evaluate_workdir(other, workdir, other_length=True)
