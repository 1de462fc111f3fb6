"""get_datasets: every task through TFDS (ArrayRecord) + grain, on mock or fixture data."""

import gzip
import json
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import MODEL, SEQ, make_config, write_aan, write_fashion_mnist
from PIL import Image

from rmaat_jax.config_checks import check_devices, validate_config
from rmaat_jax.data import batching, builders, listops, loaders, pathfinder, pipeline, preprocess
from rmaat_jax.data.pipeline import DataMissingError, get_datasets
from rmaat_jax.errors import DataFormatError
from rmaat_jax.models import ConfigError


def first_batches(loader, n):
  it = iter(loader)
  return [next(it) for _ in range(n)]


def check_batch(batch, dataset, batch_size=4):
  vocab, classes, _, dual = MODEL[dataset]
  shape = (batch_size, 2, SEQ[dataset]) if dual else (batch_size, SEQ[dataset])
  assert batch["inputs"].shape == shape and batch["inputs"].dtype == np.int32
  assert batch["targets"].shape == (batch_size,) and batch["targets"].dtype == np.int32
  assert 0 <= batch["inputs"].min() and batch["inputs"].max() < vocab
  assert 0 <= batch["targets"].min() and batch["targets"].max() < classes


# --- catalog datasets on tfds.testing.mock_data -------------------------------------------

@pytest.fixture
def online(monkeypatch):
  """mock_data replaces TFDS's download; the source check before it must pass too."""
  monkeypatch.setattr(pipeline, "check_reachable", lambda url: None)


def test_cifar10_grayscale_pipeline_on_mock_data(tmp_path, online):
  with tfds.testing.mock_data(num_examples=12):
    ds = get_datasets(make_config("image", tmp_path, download=True))
    batch = first_batches(ds.validation, 1)[0]
    check_batch(batch, "image")
    # The validation loader is in order: example 0 is the source's record 0.
    record = tfds.data_source("cifar10", split="train[90%:]", data_dir=str(tmp_path))[0]
  rgb = record["image"].astype(np.float64)
  expected = np.rint(rgb[..., 0] * 0.2989 + rgb[..., 1] * 0.5870 + rgb[..., 2] * 0.1140)
  np.testing.assert_array_equal(batch["inputs"][0], expected.reshape(-1))
  assert batch["targets"][0] == record["label"]


def test_imdb_byte_pipeline_on_mock_data(tmp_path, online):
  with tfds.testing.mock_data(num_examples=8):
    ds = get_datasets(make_config("text", tmp_path, download=True))
    batch = first_batches(ds.test, 1)[0]
    record = tfds.data_source("imdb_reviews", split="test", data_dir=str(tmp_path))[0]
  check_batch(batch, "text")
  text = record["text"].encode() if isinstance(record["text"], str) else record["text"]
  ids = np.frombuffer(text[:SEQ["text"]], np.uint8) + 1
  np.testing.assert_array_equal(batch["inputs"][0, :len(ids)], ids)
  assert not batch["inputs"][0, len(ids):].any()  # right padding with 0
  assert ds.info.source.startswith("TFDS imdb_reviews")


def test_catalog_dataset_missing_fails_at_once(tmp_path):
  with pytest.raises(DataMissingError) as err:
    get_datasets(make_config("image", tmp_path / "empty"))
  message = str(err.value)
  assert "cifar10" in message and str(tmp_path / "empty") in message
  assert "download=True" in message and "--config.data.dataset=fashion_mnist" in message


def test_failed_download_leaves_nothing_behind(tmp_path, online, monkeypatch):
  data_dir = tmp_path / "tfds"
  (data_dir / "downloads").mkdir(parents=True)
  (data_dir / "downloads" / "kept.tar.gz").write_text("an earlier download")

  def fail_midway(builder, **kwargs):  # what TFDS leaves when the connection drops
    (data_dir / "cifar10" / "incomplete.X_3.0.2").mkdir(parents=True)
    (data_dir / "downloads" / "cifar10").mkdir()
    (data_dir / "downloads" / "cifar10" / "archive.tar.gz.tmp.123").write_text("partial")
    raise ConnectionError("Connection aborted\nmore traceback text")

  monkeypatch.setattr(pipeline, "_download_and_prepare", fail_midway)
  with pytest.raises(DataMissingError, match=r"\(ConnectionError: Connection aborted\); offline"):
    get_datasets(make_config("image", data_dir, download=True))
  left = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*"))
  assert left == ["downloads", "downloads/kept.tar.gz"]


def test_unreachable_source_is_reported(monkeypatch):
  monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment would answer
  why = pipeline.check_reachable("http://127.0.0.1:9/closed-port")
  assert why is not None and "Connection refused" in why


# --- our builders on fixture files ---------------------------------------------------------

def test_retrieval_reads_lra_tsv_format(tmp_path):
  manual = tmp_path / "lra_release" / "tsv_data"
  write_aan(manual)
  ds = get_datasets(make_config("retrieval", tmp_path / "tfds", batch_size=2,
                                manual_dir=str(tmp_path / "lra_release")))
  batch = first_batches(ds.validation, 1)[0]
  check_batch(batch, "retrieval", batch_size=2)
  assert ds.info.num_examples == {"train": 6, "validation": 6, "test": 6}
  labels = {}
  for batch in ds.test:
    for inputs, target in zip(batch["inputs"], batch["targets"], strict=True):
      text_a = (inputs[0][inputs[0] > 0] - 1).astype(np.uint8).tobytes().decode()
      labels[text_a] = target
      i = int(text_a.rsplit(" ", 1)[1])
      np.testing.assert_array_equal(
          inputs[1][inputs[1] > 0], preprocess.byte_ids(f"second é {i}", 4096))
  assert labels == {f"doc one test {i}": i % 2 for i in range(6)}


def test_retrieval_missing_files_name_the_directory(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(DataMissingError, match="new_aan_pairs.train.tsv") as err:
    get_datasets(make_config("retrieval", tmp_path / "tfds", manual_dir=str(tmp_path / "manual")))
  assert str(tmp_path / "manual") in str(err.value) and "lra_release" in str(err.value)


def test_malformed_aan_line_names_file_and_line(tmp_path):
  write_aan(tmp_path / "m")
  with open(tmp_path / "m" / "new_aan_pairs.train.tsv", "a") as f:
    f.write("1\tonly three\tfields\n")
  with pytest.raises(ValueError, match=r"new_aan_pairs\.train\.tsv:7: expected 5"):
    get_datasets(make_config("retrieval", tmp_path / "tfds", manual_dir=str(tmp_path / "m")))


def test_lra_listops_tsv_and_generated_share_one_loader(tmp_path):
  manual = tmp_path / "listops-1000"
  manual.mkdir()
  rows = ["( ( ( [MAX 2 ) 9 ) ] )\t9", "( ( [SM 4 ) ( ( ( [MIN 7 ) 3 ) ] ) ] )\t7"] * 4
  for name in listops.SPLIT_FILES:
    (manual / name).write_text("Source\tTarget\n" + "\n".join(rows) + "\n")
  lra = get_datasets(make_config("listops", tmp_path / "tfds", batch_size=8,
                                 manual_dir=str(tmp_path)))
  batch = first_batches(lra.test, 1)[0]
  check_batch(batch, "listops", batch_size=8)
  # [MAX 2 9 ] -> ids of [MAX, 2, 9, ]; brackets '(' ')' dropped; padded with 0.
  expected = preprocess.pad_to(listops.tokenize(rows[0].split("\t")[0]), SEQ["listops"])
  assert any(np.array_equal(row, expected) for row in batch["inputs"])
  assert "LRA ListOps from" in lra.info.source

  generated = get_datasets(make_config("listops", tmp_path / "tfds", generate=True))
  assert generated.info.num_examples == {"train": 24, "validation": 8, "test": 8}
  assert generated.info.source.startswith("GENERATED listops")
  check_batch(first_batches(generated.train, 1)[0], "listops")


def test_fashion_mnist_substitute_from_idx_files(tmp_path):
  images = write_fashion_mnist(tmp_path)
  ds = get_datasets(make_config("fashion_mnist", tmp_path / "tfds", batch_size=5,
                                manual_dir=str(tmp_path)))
  assert ds.info.num_examples == {"train": 18, "validation": 2, "test": 5}
  assert "SUBSTITUTE" in ds.info.source
  batch = first_batches(ds.test, 1)[0]
  check_batch(batch, "fashion_mnist", batch_size=5)
  for inputs, target in zip(batch["inputs"], batch["targets"], strict=True):
    padded = preprocess.pad_image(images["t10k"][target], 32)  # label i is image i here
    np.testing.assert_array_equal(inputs, padded.reshape(-1))
    assert not inputs.reshape(32, 32)[:2].any()  # 2-pixel zero border


def test_corrupt_idx_file_is_named(tmp_path):
  (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x01rubbish"))
  with pytest.raises(ValueError, match="bad.gz"):
    builders.read_idx(tmp_path / "bad.gz")


@pytest.mark.skipif(not pathlib.Path(builders.FASHION_MNIST_DIR).exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_debian_fashion_mnist_files_are_readable():
  labels = builders.read_idx(pathlib.Path(builders.FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz")
  images = builders.read_idx(pathlib.Path(builders.FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz")
  assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
  assert set(np.unique(labels)) == set(range(10))


# --- order, resumption, sharding, config checks -----------------------------------------

@pytest.fixture(scope="module")
def generated_listops(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  get_datasets(make_config("listops", data_dir, generate=True))  # prepare once
  return data_dir


def test_training_order_is_a_function_of_seed_and_resumable(generated_listops):
  config = make_config("listops", generated_listops, generate=True, seed=3)
  a = first_batches(get_datasets(config).train, 8)  # 32 examples: crosses the epoch
  b = first_batches(get_datasets(config).train, 8)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
  other = first_batches(get_datasets(make_config("listops", generated_listops, generate=True,
                                                 seed=4)).train, 1)[0]
  assert not np.array_equal(other["inputs"], a[0]["inputs"])

  it = iter(get_datasets(config).train)
  for _ in range(3):
    next(it)
  state = it.get_state()
  resumed = iter(get_datasets(config).train)
  resumed.set_state(state)
  for expected in a[3:]:
    np.testing.assert_array_equal(next(resumed)["inputs"], expected["inputs"])


def test_batches_do_not_depend_on_the_number_of_workers(generated_listops):
  from absl import flags

  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags (main.py parses them)
  config = make_config("listops", generated_listops, generate=True, seed=3, batch_size=3)
  reference = get_datasets(config)
  want = first_batches(reference.train, 7)
  want_eval = list(reference.validation)
  for workers in (1, 2):
    config.data.num_workers = workers
    ds = get_datasets(config)
    for got, expected in zip(first_batches(ds.train, 7), want, strict=True):
      np.testing.assert_array_equal(got["inputs"], expected["inputs"])
      np.testing.assert_array_equal(got["targets"], expected["targets"])
    got_eval = list(ds.validation)
    assert len(got_eval) == len(want_eval)
    for got, expected in zip(got_eval, want_eval, strict=True):
      np.testing.assert_array_equal(got["inputs"], expected["inputs"])
  # A position saved with 2 workers restores with 0 (and the other way) at the same batch.
  it = iter(ds.train)
  for _ in range(5):
    next(it)
  state = it.get_state()
  config.data.num_workers = 0
  resumed = iter(get_datasets(config).train)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["inputs"], want[5]["inputs"])
  config.data.num_workers = 2
  again = iter(get_datasets(config).train)
  again.set_state(resumed.get_state())
  np.testing.assert_array_equal(next(again)["inputs"], want[6]["inputs"])


def test_a_position_written_by_the_earlier_per_record_loader_is_continued(generated_listops):
  # Earlier versions batched records with grain.Batch: after k batches of 3 their state
  # said "record 3k - 1 seen" under a GlobalBatchSampler. Without workers that is batch k.
  config = make_config("listops", generated_listops, generate=True, seed=3, batch_size=3)
  ds = get_datasets(config)
  want = first_batches(ds.train, 5)
  it = iter(ds.train)
  state = json.loads(it.get_state().decode())
  old = {**state, "last_seen_indices": {"0": 4 * 3 - 1}, "last_worker_index": -1,
         "worker_count": 0, "sampler": "GlobalBatchSampler(num_records=24, global_batch=3, "
                                       "process=0/1, seed=3)"}
  it.set_state(json.dumps(old).encode())
  np.testing.assert_array_equal(next(it)["inputs"], want[4]["inputs"])
  with pytest.raises(ValueError, match="data.num_workers=2 by an earlier rmaat_jax"):
    it.set_state(json.dumps({**old, "worker_count": 2}).encode())


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("batches", [0, 1, 5, 6, 7])
def test_a_loader_position_is_rewritten_as_grain_writes_it(workers, batches):
  # grain's own state after `batches` batches with `workers` workers: the global index of the
  # last element each worker returned (negative before its first), the last worker used.
  if workers == 0:
    want = {"0": batches - 1}
  else:
    want = {str(w): max((i for i in range(batches) if i % workers == w), default=w - workers)
            for w in range(workers)}
  state = loaders.state_at({"sampler": "s"}, batches, workers)
  assert state["last_seen_indices"] == want and state["worker_count"] == workers
  assert loaders.position(state) == batches
  assert state["sampler"] == "s"


def test_each_process_reads_its_own_shard(generated_listops):
  config = make_config("listops", generated_listops, generate=True, batch_size=4)
  seen = []
  for index in range(2):
    ds = get_datasets(config, process_index=index, process_count=2)
    batches = list(ds.validation)
    assert all(b["inputs"].shape[0] <= 2 for b in batches)  # per-process batch
    seen.append({row.tobytes() for b in batches for row in b["inputs"]})
  assert not seen[0] & seen[1]
  assert len(seen[0]) + len(seen[1]) == 8


@pytest.mark.parametrize("field, value, message", [
    ("model.seq_len", 1000, r"model\.seq_len=1000.*1024"),
    ("model.num_classes", 3, r"model\.num_classes: the dataset sets it \(pathfinder: 2\)"),
    ("model.pad_id", 0, r"model\.pad_id: the dataset sets it"),
    ("data.dataset", "cifar", r"data\.dataset='cifar'"),
    ("train.batch_size", 3, r"train\.batch_size=3: must be a multiple of the number of pro"),
])
def test_config_mismatch_is_a_config_error(tmp_path, field, value, message):
  config = make_config("pathfinder", tmp_path)
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(ConfigError, match=message):
    validate_config(config)
    check_devices(config, num_devices=1, num_processes=2)


def test_the_data_sets_the_models_vocabulary_classes_padding_and_length(tmp_path):
  ds = get_datasets(make_config("pathfinder", tmp_path / "tfds", generate=True))
  assert ds.info.model_facts() == dict(vocab_size=256, num_classes=2, pad_id=-1,
                                       dual_encoder=False, seq_len=1024)
  config = make_config("listops", tmp_path / "tfds", generate=True)
  config.model.seq_len = 0  # the dataset's length
  assert validate_config(config).seq_len == 2048


def test_missing_listops_files_without_generate(tmp_path):
  with pytest.raises(DataMissingError, match="listops.*data.generate=True"):
    get_datasets(make_config("listops", tmp_path, manual_dir=str(tmp_path / "nowhere")))


def test_pathfinder_generated_and_lra_layout_share_one_loader(tmp_path):
  generated = get_datasets(make_config("pathfinder", tmp_path, generate=True,
                                       generate_sizes=(16, 4, 4), pathfinder_difficulty="hard"))
  assert generated.info.num_examples == {"train": 16, "validation": 4, "test": 4}
  assert generated.info.source.startswith("GENERATED pathfinder")
  batch = first_batches(generated.test, 1)[0]
  check_batch(batch, "pathfinder")
  # The generator wrote LRA's layout; read it back as if it were lra_release/pathfinder32.
  root = next((tmp_path / "generated" / "pathfinder").iterdir())
  lra = get_datasets(make_config("pathfinder", tmp_path / "lra_copy", manual_dir=str(root)))
  assert lra.info.num_examples == {"train": 19, "validation": 2, "test": 3}  # 80/10/10 of 24
  pngs = {}
  for path, label in pathfinder.read_metadata(root / "curv_contour_length_14"):
    with Image.open(path) as image:
      pngs[np.asarray(image).tobytes()] = label
  assert len(pngs) == 24
  for loader in (generated.test, lra.validation, lra.test):  # (train is endless)
    for b in loader:
      for inputs, target in zip(b["inputs"], b["targets"], strict=True):
        assert pngs[inputs.astype(np.uint8).tobytes()] == target


# --- batched decoding (issue 13 item 6) against the per-record reference --------------------

def per_record_reference(kind, record, seq_len, pad_id):
  """A TFDS-decoded record -> (int32 ids, int32 label): the per-record transform the loaders
  ran before they read and decoded whole batches."""
  if kind == "tokens":
    ids = preprocess.pad_to(np.asarray(record["inputs"]), seq_len, max(pad_id, 0))
  elif kind == "text":
    ids = preprocess.pad_to(preprocess.byte_ids(record["text"], builders.TEXT_MAX_LEN), seq_len)
  elif kind == "image_rgb":
    ids = preprocess.grayscale_pixels(record["image"])
  else:
    ids = np.stack([preprocess.pad_to(np.asarray(record[k]), seq_len)
                    for k in ("inputs_a", "inputs_b")])
  label = record["targets"] if "targets" in record else record["label"]
  return ids.astype(np.int32), np.asarray(label, np.int32)


def task_features(name, data_dir):
  """The TFDS features of the builder that stores `name` (nothing is prepared)."""
  if name in ("image", "text"):
    return tfds.builder({"image": "cifar10", "text": "imdb_reviews"}[name],
                        data_dir=str(data_dir)).info.features
  cls = {"listops": builders.LraListops, "pathfinder": builders.LraPathfinder32,
         "retrieval": builders.LraRetrieval}[name]
  return cls(data_dir=str(data_dir)).info.features


def random_records(name, n, seq_len, rng):
  """n examples in the format of `name`'s builder, with the edge cases first: empty, one
  token, exactly / one short of / one past seq_len, and far longer."""
  lengths = [0, 1, seq_len - 1, seq_len, seq_len + 1, 5000]
  lengths += list(rng.integers(0, 2 * seq_len, n - len(lengths)))
  records = []
  for i, length in enumerate(lengths[:n]):
    if name == "listops":
      records.append({"inputs": rng.integers(1, 17, length, np.int32), "targets": i % 10})
    elif name == "pathfinder":
      records.append({"inputs": rng.integers(0, 256, 1024, np.int32), "targets": i % 2})
    elif name == "retrieval":
      records.append({"inputs_a": rng.integers(1, 257, length, np.int32),
                      "inputs_b": rng.integers(1, 257, (length * 7) % 90, np.int32),
                      "targets": i % 2})
    elif name == "image":
      image = rng.integers(0, 256, (32, 32, 3), np.uint8)
      image[:2] = (0, 255)[i % 2]  # black and white rows: the ends of the range
      records.append({"id": f"train_{i}", "image": image, "label": i % 10})
    else:  # text: UTF-8 with multi-byte characters, and raw bytes 0x00 and 0xff
      text = "é日b" * (length // 6) + "a" * (length % 6)
      records.append({"text": text.encode() + b"\x00\xff" if i % 3 == 0 else text,
                      "label": i % 2})
  return records


DECODE_CASES = [  # (test id, task, record kind, seq_len, vocab_size, pad_id)
    ("listops", "listops", "tokens", 64, 17, 0),
    ("pathfinder", "pathfinder", "tokens", 1024, 256, -1),
    ("text", "text", "text", 96, 257, 0),
    ("text-past-4096", "text", "text", 4200, 257, 0),  # LRA's 4096-byte cut, then padding
    ("image", "image", "image_rgb", 1024, 256, -1),
    ("retrieval", "retrieval", "pair", 48, 257, 0),
]


@pytest.mark.parametrize("name, kind, seq_len, vocab, pad_id",
                         [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_batched_decoding_matches_the_per_record_reference(tmp_path, monkeypatch, name,
                                                           kind, seq_len, vocab, pad_id):
  features = task_features(name, tmp_path)
  records = random_records(name, 37, seq_len, np.random.default_rng(len(name)))
  raw = [features.serialize_example(r) for r in records]  # what the ArrayRecord file holds
  decoded = [features.deserialize_example_np(r) for r in raw]  # what TFDS would hand out
  expected = [per_record_reference(kind, d, seq_len, pad_id) for d in decoded]
  transform = batching.ToModelInputs(kind, seq_len, pad_id, vocab, name, features=features)
  transform = pickle.loads(pickle.dumps(transform))  # as grain's worker processes get it

  def fail(*args, **kwargs):
    raise AssertionError("raw records must not go through TFDS's per-record decoding")

  monkeypatch.setattr(transform.features, "deserialize_example_np", fail)
  for inputs in (raw, decoded, records):  # the loaders'; mock_data's; plain examples
    for sizes in ((32, 5), (1, 1, 1)):  # a full batch then a short last one; single examples
      start = 0
      for size in sizes:
        batch = transform(inputs[start:start + size])
        want = expected[start:start + size]
        assert batch["inputs"].dtype == np.int32 and batch["targets"].dtype == np.int32
        np.testing.assert_array_equal(batch["inputs"], np.stack([w[0] for w in want]))
        np.testing.assert_array_equal(batch["targets"], np.stack([w[1] for w in want]))
        start += size
  single = transform.map(decoded[3])
  np.testing.assert_array_equal(single["inputs"], expected[3][0])
  assert single["targets"] == expected[3][1]


def test_features_the_fast_decoding_does_not_know_are_decoded_by_tfds(tmp_path):
  features = tfds.features.FeaturesDict({  # compressed ids: only TFDS can read them
      "inputs": tfds.features.Tensor(shape=(None,), dtype=np.int32, encoding="zlib"),
      "targets": tfds.features.ClassLabel(num_classes=3)})
  records = [{"inputs": np.arange(1, n + 1, dtype=np.int32), "targets": n % 3}
             for n in (0, 3, 9)]
  transform = batching.ToModelInputs("tokens", 6, 0, 17, "listops", features=features)
  batch = transform([features.serialize_example(r) for r in records])
  expected = [per_record_reference("tokens", r, 6, 0) for r in records]
  np.testing.assert_array_equal(batch["inputs"], np.stack([e[0] for e in expected]))
  np.testing.assert_array_equal(batch["targets"], [0, 0, 0])


def test_out_of_vocabulary_ids_name_the_first_bad_example_of_a_batch(tmp_path):
  features = task_features("listops", tmp_path)
  ids = [[1, 2], [3], [1, 17], [4], [-1, 5]]
  raw = [features.serialize_example({"inputs": np.array(i, np.int32), "targets": 0})
         for i in ids]
  transform = batching.ToModelInputs("tokens", 8, 0, 17, "listops", features=features)
  with pytest.raises(DataFormatError, match=r"^listops: an example holds token id 17, outside "
                     r"the task's vocabulary \[0, 17\); the prepared copy is corrupt"):
    transform(raw)
  with pytest.raises(DataFormatError, match="token id -1, outside"):
    transform(raw[3:])
  assert transform(raw[:2])["inputs"].max() == 3


@pytest.mark.parametrize("shape", [(5, 32, 32, 3), (5, 28, 28, 1), (5, 28, 28)])
def test_grayscale_batch_is_grayscale_pixels_per_image(shape):
  images = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  np.testing.assert_array_equal(preprocess.grayscale_batch(images),
                                np.stack([preprocess.grayscale_pixels(i) for i in images]))


def test_batch_reader_reads_what_tfds_reads(tmp_path):
  write_fashion_mnist(tmp_path)  # 20 training and 5 test records
  config = make_config("fashion_mnist", tmp_path / "tfds", manual_dir=str(tmp_path))
  builder, _ = pipeline.prepare_builder("fashion_mnist", config.data)
  split = "train[25%:]+test"  # two files, the first one from its 6th record on
  source = builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  assert len(source) == 20
  keys = [int(k) for k in np.random.default_rng(0).permutation(20)] + [0, 19, 19]
  reader = batching.BatchReader(source)
  assert reader.read(keys) == [source[k] for k in keys]
  assert pickle.loads(pickle.dumps(reader)).read(keys[:5]) == [source[k] for k in keys[:5]]
  with pytest.raises(IndexError):
    reader.read([20])
  # grain keeps repr(data source) in iterator states: the batch-level source shows the
  # TFDS source's.
  assert repr(loaders.BatchIndices(source, 3)) == repr(builder.as_data_source(split=split))


def test_loaders_give_the_per_record_reference_batches(generated_listops):
  config = make_config("listops", generated_listops, generate=True, seed=5, batch_size=3)
  ds = get_datasets(config)
  builder, _ = pipeline.prepare_builder("listops", config.data)
  train, validation = (builder.as_data_source(split=s) for s in ("train", "validation"))
  sampler = batching.GlobalBatchSampler(len(train), 3, 0, 1, seed=5)

  def reference(source, keys):
    rows = [per_record_reference("tokens", source[k], SEQ["listops"], 0) for k in keys]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

  for step, batch in enumerate(first_batches(ds.train, 10)):  # 30 of 24 records: 2 epochs
    ids, labels = reference(train, [sampler[3 * step + i].record_key for i in range(3)])
    np.testing.assert_array_equal(batch["inputs"], ids)
    np.testing.assert_array_equal(batch["targets"], labels)
  batches = list(ds.validation)
  assert [len(b["targets"]) for b in batches] == [3, 3, 2]  # the last batch is short
  ids, labels = reference(validation, range(8))
  np.testing.assert_array_equal(np.concatenate([b["inputs"] for b in batches]), ids)
  np.testing.assert_array_equal(np.concatenate([b["targets"] for b in batches]), labels)
