"""TFDS builders for the LRA tasks that LRA ships as files, and for the offline Image
substitute.

Each builder reads raw files from its `manual_dir` and stores token ids, so reading the
prepared ArrayRecord files (`as_data_source` + grain) needs neither TensorFlow nor any
decoding: ListOps and Retrieval store variable-length ids (padded to the model length in
the pipeline), Pathfinder and Fashion-MNIST store 1024 pixel values.

Builder configs keep sources apart: "lra" reads LRA's release files; "generated_..."
(ListOps, Pathfinder) reads files our generators wrote, the config name carrying the
generator's parameters so that two different generated sets never share a prepared copy.
The recall task (MemoryRecall) has no files: its builder draws the examples itself, and the
prepared copy is the cache.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from rmaat_jax.data import listops, pathfinder, preprocess, recall
from rmaat_jax.errors import DataFormatError, DataMissingError

LRA_RELEASE = "https://github.com/google-research/long-range-arena (lra_release.gz)"
TEXT_MAX_LEN = 4096  # LRA's byte-level truncation for Text and Retrieval
PATHFINDER_SPLIT_SEED = 0  # the seeded 80/10/10 split of LRA's Pathfinder images
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def find_dir(manual_dir: pathlib.Path, required: Sequence[str],
             subdirs: Sequence[str], what: str, how: str) -> pathlib.Path:
  """The first of manual_dir, manual_dir/<subdir>... holding every `required` file."""
  candidates = [manual_dir] + [manual_dir / s for s in subdirs]
  for directory in candidates:
    if all((directory / name).exists() for name in required):
      return directory
  raise DataMissingError(
      f"{what}: could not find {', '.join(required)} in {manual_dir} (searched "
      f"{', '.join(str(c) for c in candidates)}). {how}")


class ManualFilesBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder of files from `manual_dir`: `locate_files` finds them (or raises
  DataMissingError naming the directory and how to get the data) before TFDS is asked to
  prepare, and `_splits` turns the located folder into split generators."""

  def locate_files(self, manual_dir: pathlib.Path) -> pathlib.Path:
    raise NotImplementedError

  def _splits(self, root: pathlib.Path) -> dict:
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    return self._splits(self.locate_files(pathlib.Path(dl_manager.manual_dir)))


def _tokens_feature() -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=(None,), dtype=np.int32)


def _pixels_info(builder, description: str, num_classes: int) -> tfds.core.DatasetInfo:
  """1024 pixel ids in raster order and a label (Pathfinder, Fashion-MNIST)."""
  return builder.dataset_info_from_configs(
      description=description,
      features=tfds.features.FeaturesDict({
          "inputs": tfds.features.Tensor(shape=(1024,), dtype=np.int32),
          "targets": tfds.features.ClassLabel(num_classes=num_classes)}),
      supervised_keys=("inputs", "targets"))


class LraListops(ManualFilesBuilder):
  """LRA ListOps: `basic_{train,val,test}.tsv` (LRA's release or our generator)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="lra", description="LRA release files")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Point data.manual_dir at lra_release/listops-1000 from {LRA_RELEASE}, or set "
      "data.generate=True (or run python -m rmaat_jax.data.listops --out DIR).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="ListOps token ids ('(' ')' dropped, ']' kept; docs/data.md section 2.1)",
        features=tfds.features.FeaturesDict({
            "inputs": _tokens_feature(),
            "targets": tfds.features.ClassLabel(num_classes=10)}),
        supervised_keys=("inputs", "targets"))

  def locate_files(self, manual_dir: pathlib.Path) -> pathlib.Path:
    return find_dir(manual_dir, listops.SPLIT_FILES, ["listops-1000"], "ListOps",
                    self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _splits(self, root: pathlib.Path) -> dict:
    train, val, test = (root / name for name in listops.SPLIT_FILES)
    return {"train": self._generate_examples(train),
            "validation": self._generate_examples(val),
            "test": self._generate_examples(test)}

  def _generate_examples(self, path: pathlib.Path) -> Iterator[tuple[int, dict]]:
    for i, (source, label) in enumerate(listops.iter_tsv(path)):
      yield i, {"inputs": listops.tokenize(source), "targets": label}


@dataclasses.dataclass(eq=False)
class PathfinderConfig(tfds.core.BuilderConfig):
  """Which contour length to read, and how to split: LRA's seeded 80/10/10 when
  `split_sizes` is None, else exactly (train, validation, test) images."""

  contour_length: int = 14
  split_sizes: tuple[int, int, int] | None = None


class LraPathfinder32(ManualFilesBuilder):
  """Pathfinder-32 (LRA layout: metadata/*.npy + imgs/*/sample_*.png), split 80/10/10."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [PathfinderConfig(name="lra", description="LRA release, hard (14)")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Point data.manual_dir at lra_release/pathfinder32 from {LRA_RELEASE}, or set "
      "data.generate=True (or run python -m rmaat_jax.data.pathfinder --out DIR).")

  def _info(self) -> tfds.core.DatasetInfo:
    return _pixels_info(self, "Pathfinder-32 pixels 0-255 in raster order", 2)

  def locate_files(self, manual_dir: pathlib.Path) -> pathlib.Path:
    contour_dir = f"curv_contour_length_{self.builder_config.contour_length}"
    return find_dir(manual_dir, ["metadata"], [contour_dir, f"pathfinder32/{contour_dir}"],
                    "Pathfinder-32", self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _splits(self, root: pathlib.Path) -> dict:
    records = pathfinder.read_metadata(root)
    n = len(records)
    if not n:
      raise DataMissingError(f"Pathfinder-32: {root}/metadata lists no images")
    n_train, n_val = int(0.8 * n), int(0.1 * n)
    sizes = self.builder_config.split_sizes or (n_train, n_val, n - n_train - n_val)
    if sum(sizes) > n:
      raise DataMissingError(f"Pathfinder-32: {root} lists {n} images, fewer than the "
                             f"{sum(sizes)} of split sizes {tuple(sizes)}")
    order = np.random.default_rng(PATHFINDER_SPLIT_SEED).permutation(n)[:sum(sizes)]
    parts = np.split(order, np.cumsum(sizes[:2]))
    return {name: self._generate_examples([records[i] for i in part])
            for name, part in zip(("train", "validation", "test"), parts, strict=True)}

  def _generate_examples(self, records) -> Iterator[tuple[str, dict]]:
    from PIL import Image  # only the builder decodes PNGs; readers get pixels

    for path, label in records:
      try:
        with Image.open(path) as image:
          pixels = np.asarray(image.convert("L"))
      except (OSError, ValueError) as e:
        raise DataFormatError(f"Pathfinder-32: cannot read image {path}: {e}") from e
      if pixels.shape != (32, 32):
        raise DataFormatError(f"Pathfinder-32: {path} is {pixels.shape}, expected 32 x 32")
      yield str(path), {"inputs": pixels.reshape(-1).astype(np.int32), "targets": label}


class LraRetrieval(ManualFilesBuilder):
  """LRA Retrieval (AAN): `new_aan_pairs.{train,eval,test}.tsv`, two byte-level docs."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="lra", description="LRA release files")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Point data.manual_dir at lra_release/tsv_data from {LRA_RELEASE} (the AAN pairs "
      "cannot be generated).")
  FILES = ("new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="AAN citation pairs, bytes + 1 truncated to 4096 per document",
        features=tfds.features.FeaturesDict({
            "inputs_a": _tokens_feature(), "inputs_b": _tokens_feature(),
            "targets": tfds.features.ClassLabel(num_classes=2)}))

  def locate_files(self, manual_dir: pathlib.Path) -> pathlib.Path:
    return find_dir(manual_dir, self.FILES, ["tsv_data", "lra_release/tsv_data"],
                    "Retrieval (AAN)", self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _splits(self, root: pathlib.Path) -> dict:
    return {name: self._generate_examples(root / f)
            for name, f in zip(("train", "validation", "test"), self.FILES, strict=True)}

  def _generate_examples(self, path: pathlib.Path) -> Iterator[tuple[int, dict]]:
    for line_no, fields in enumerate(_read_tsv_rows(path, 5), start=1):
      label, _, _, text_a, text_b = fields
      try:
        target = int(float(label))
      except ValueError:
        raise DataFormatError(f"{path}:{line_no}: label {label!r} is not a number") from None
      if target not in (0, 1):
        raise DataFormatError(f"{path}:{line_no}: label {target} is not 0 or 1")
      yield line_no, {"inputs_a": preprocess.byte_ids(text_a, TEXT_MAX_LEN),
                      "inputs_b": preprocess.byte_ids(text_b, TEXT_MAX_LEN),
                      "targets": target}


def _read_tsv_rows(path: pathlib.Path, num_fields: int) -> Iterator[list[str]]:
  """Rows of a header-less TSV (LRA's AAN files), each with exactly num_fields fields."""
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_no, line in enumerate(f, start=1):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != num_fields:
        raise DataFormatError(
            f"{path}:{line_no}: expected {num_fields} tab-separated fields "
            f"(label, id1, id2, text1, text2), found {len(fields)}")
      yield fields


class FashionMnistDebian(ManualFilesBuilder):
  """Offline Image substitute: Fashion-MNIST from Debian's dataset-fashion-mnist idx files,
  28 x 28 zero-padded to 32 x 32 (1024 pixels). Not CIFAR-10: never compare with LRA."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Install Debian's package: apt-get install dataset-fashion-mnist (files land in "
      f"{FASHION_MNIST_DIR}), or point data.manual_dir at a folder with the four idx .gz "
      "files.")
  FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
           "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

  def _info(self) -> tfds.core.DatasetInfo:
    return _pixels_info(self, "Fashion-MNIST padded to 32 x 32, pixels 0-255", 10)

  def locate_files(self, manual_dir: pathlib.Path) -> pathlib.Path:
    required = [f for pair in self.FILES.values() for f in pair]
    return find_dir(manual_dir, required, [], "Fashion-MNIST", self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _splits(self, root: pathlib.Path) -> dict:
    return {split: self._generate_examples(root / images, root / labels)
            for split, (images, labels) in self.FILES.items()}

  def _generate_examples(self, images_path, labels_path) -> Iterator[tuple[int, dict]]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
      raise DataFormatError(f"{images_path}: {images.shape} images for {labels.shape} labels")
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
      pixels = preprocess.pad_image(image, 32).reshape(-1).astype(np.int32)
      yield i, {"inputs": pixels, "targets": int(label)}


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads a (gzipped) idx file of unsigned bytes (the MNIST format)."""
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataFormatError(f"{path}: not a readable idx file ({e})") from e
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
    raise DataFormatError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise DataFormatError(f"{path}: header says {shape} but holds {body.size} bytes")
  return body.reshape(shape)


@dataclasses.dataclass(eq=False)
class RecallConfig(tfds.core.BuilderConfig):
  """One recall dataset: the task's parameters, split sizes and seed (the name says all)."""

  spec: recall.RecallSpec = dataclasses.field(default_factory=recall.RecallSpec)
  split_sizes: tuple[int, int, int] = (20_000, 1_000, 1_000)
  seed: int = 0

  @classmethod
  def of(cls, spec: recall.RecallSpec, split_sizes: tuple[int, int, int],
         seed: int) -> RecallConfig:
    name = (f"T{spec.num_segments}_S{spec.segment_len}_p{spec.num_pairs}_k{spec.num_keys}"
            f"_v{spec.num_values}_{'_'.join(map(str, split_sizes))}_seed{seed}")
    return cls(name=name, spec=spec, split_sizes=tuple(split_sizes), seed=seed)


class MemoryRecall(tfds.core.GeneratorBasedBuilder):
  """Associative recall across segments (rmaat_jax.data.recall), drawn by the builder."""

  VERSION = tfds.core.Version("1.0.0")
  # TFDS wants one listed config; the pipeline always passes its own (RecallConfig.of), whose
  # names (T4_S64_...) never collide with this one's.
  BUILDER_CONFIGS = [RecallConfig(name="defaults", description="RecallSpec() defaults")]

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    return self.dataset_info_from_configs(
        description=f"Recall: {spec.num_pairs} key -> value pair(s) in segment 1 of "
                    f"{spec.num_segments} x {spec.segment_len} tokens, query in the last",
        features=tfds.features.FeaturesDict({
            "inputs": tfds.features.Tensor(shape=(spec.seq_len,), dtype=np.int32),
            "targets": tfds.features.ClassLabel(num_classes=spec.num_values)}),
        supervised_keys=("inputs", "targets"))

  def _split_generators(self, dl_manager):
    config = self.builder_config
    splits = recall.generate_splits(config.spec, config.split_sizes, config.seed)
    return {name: self._generate_examples(*splits[name]) for name in recall.SPLITS}

  def _generate_examples(self, tokens: np.ndarray, labels: np.ndarray
                         ) -> Iterator[tuple[int, dict]]:
    for i, (row, label) in enumerate(zip(tokens, labels, strict=True)):
      yield i, {"inputs": row.astype(np.int32), "targets": int(label)}
