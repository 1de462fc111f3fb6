"""What each `data.dataset` is, and the checks of `data.*` that need no data.

Kept free of TFDS, grain and TensorFlow so that validating a config (the command line
does it first) costs milliseconds: the input pipeline (pipeline.py) reads these tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rmaat_jax.data import listops, pathfinder, preprocess, recall
from rmaat_jax.errors import ConfigError

__all__ = ["MODEL_FACTS", "TASKS", "Task", "check_data_config", "get_task", "model_config",
           "model_facts", "recall_spec", "resolve_task"]


@dataclasses.dataclass(frozen=True)
class Task:
  """What a dataset name means: where it comes from and what the model sees."""

  description: str
  splits: tuple[str, str, str]  # TFDS split strings for train, validation, test
  kind: str  # record -> tokens: "tokens" | "text" | "image_rgb" | "pair"
  vocab_size: int
  num_classes: int
  pad_id: int  # -1: every id is a real token
  catalog: str = ""  # TFDS catalog name, else our builder below
  builder: str = ""  # class name in rmaat_jax.data.builders (resolved by the pipeline)
  seq_len: int = 0  # tokens per example the model reads (model.seq_len=0 takes this)
  fixed_length: bool = False  # pixel tasks: exactly seq_len tokens, no other length
  generator: str = ""  # "listops" | "pathfinder" | "recall" when data.generate may be used
  download_url: str = ""  # catalog datasets: checked before TFDS downloads (fails fast)
  offline: str = ""  # what to do without internet (catalog datasets)


TASKS: dict[str, Task] = {
    "listops": Task("LRA ListOps", ("train", "validation", "test"), "tokens",
                    listops.VOCAB_SIZE, 10, listops.PAD_ID, builder="LraListops",
                    seq_len=2048, generator="listops"),
    "text": Task("LRA Text (IMDb bytes; LRA evaluates on test for validation too)",
                 ("train", "test", "test"), "text", preprocess.BYTE_VOCAB_SIZE, 2, 0,
                 catalog="imdb_reviews", seq_len=4096,
                 download_url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                 offline="prepare imdb_reviews on a machine with internet and copy its "
                 "folder into data.data_dir"),
    "retrieval": Task("LRA Retrieval (AAN)", ("train", "validation", "test"), "pair",
                      preprocess.BYTE_VOCAB_SIZE, 2, 0, builder="LraRetrieval",
                      seq_len=4096),
    "image": Task("LRA Image (CIFAR-10 grayscale)", ("train[:90%]", "train[90%:]", "test"),
                  "image_rgb", preprocess.PIXEL_VOCAB_SIZE, 10, -1, catalog="cifar10",
                  seq_len=1024, fixed_length=True,
                  download_url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                  offline="use the substitute "
                  "--config.data.dataset=fashion_mnist (Debian's dataset-fashion-mnist; results "
                  "are labelled and not comparable with CIFAR-10), or copy a prepared cifar10 "
                  "into data.data_dir"),
    "fashion_mnist": Task(
        "Image (Fashion-MNIST) - offline SUBSTITUTE for LRA Image, not comparable with "
        "CIFAR-10 results", ("train[:90%]", "train[90%:]", "test"), "tokens",
        preprocess.PIXEL_VOCAB_SIZE, 10, -1, builder="FashionMnistDebian",
        seq_len=1024, fixed_length=True),
    "pathfinder": Task("LRA Pathfinder-32 (hard)", ("train", "validation", "test"), "tokens",
                       preprocess.PIXEL_VOCAB_SIZE, 2, -1, builder="LraPathfinder32",
                       seq_len=1024, fixed_length=True, generator="pathfinder"),
    # Vocabulary, classes and length follow data.recall (resolve_task); these are the
    # defaults' (RecallSpec()).
    "recall": Task("Memory recall (generated key -> value pairs, query in the last segment)",
                   ("train", "validation", "test"), "tokens", recall.RecallSpec().vocab_size,
                   recall.RecallSpec().num_values, recall.PAD_ID, builder="MemoryRecall",
                   seq_len=recall.RecallSpec().seq_len, fixed_length=True, generator="recall"),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise ConfigError(f"data.dataset={name!r}: unknown dataset; use one of {sorted(TASKS)}")
  return TASKS[name]


def recall_spec(data_config) -> recall.RecallSpec:
  """The recall task's parameters from `data.recall`."""
  return recall.RecallSpec(**{f.name: data_config.recall[f.name]
                              for f in dataclasses.fields(recall.RecallSpec)})


def resolve_task(data_config) -> Task:
  """`data.dataset`'s Task with what the data config decides filled in (the recall task's
  vocabulary, classes and length come from data.recall)."""
  task = get_task(data_config.dataset)
  if task.generator != "recall":
    return task
  spec = recall_spec(data_config)
  return dataclasses.replace(task, vocab_size=spec.vocab_size, num_classes=spec.num_values,
                             seq_len=spec.seq_len)


# What the data fixes about the model. The task configs hold only choices (size, segments,
# schedule); these come from the dataset, and the trainer passes them to the model.
MODEL_FACTS = ("vocab_size", "num_classes", "pad_id", "dual_encoder", "seq_len")


def model_facts(config) -> dict[str, Any]:
  """{vocab_size, num_classes, pad_id, dual_encoder, seq_len} of `config.data.dataset`.

  seq_len: `model.seq_len` where set (> 0: pad or truncate text-like inputs to it), else the
  task's length (ListOps and Text/Retrieval padded to 2048 / 4096, pixels 1024).
  """
  task = resolve_task(config.data)
  return dict(vocab_size=task.vocab_size, num_classes=task.num_classes, pad_id=task.pad_id,
              dual_encoder=task.kind == "pair", seq_len=config.model.seq_len or task.seq_len)


def model_config(config) -> dict[str, Any]:
  """`config.model` completed with the dataset's facts: what ModelConfig.from_config takes."""
  model = dict(config.model.items())
  for name in MODEL_FACTS[:-1]:  # all but seq_len, which a config may choose
    if name in model:
      raise ConfigError(f"model.{name}: the dataset sets it ({config.data.dataset}: "
                        f"{model_facts(config)[name]}); remove it from the config")
  return {**model, **model_facts(config)}


PATHFINDER_DIFFICULTIES = tuple(pathfinder.CONTOUR_LENGTHS)


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"data.{name}={value!r}: must be an integer >= {minimum}")


def check_data_config(config) -> None:
  """Every `data.*` value, and that the model can read the data; before any file is read."""
  data_config, name = config.data, config.data.dataset
  get_task(name)
  if name == "recall":
    _check_recall(config)
  task = resolve_task(data_config)
  seq_len = config.model.seq_len
  if task.fixed_length and seq_len not in (0, task.seq_len):
    raise ConfigError(f"model.seq_len={seq_len}: {name} has exactly {task.seq_len} tokens "
                      f"per example; set model.seq_len=0 (the dataset's length) or "
                      f"{task.seq_len}")
  for field in ("download", "generate"):
    if not isinstance(data_config[field], bool):
      raise ConfigError(f"data.{field}={data_config[field]!r}: must be True or False")
  if data_config.generate and not task.generator:
    raise ConfigError(f"data.generate=True: {name} cannot be generated (only listops, "
                      "pathfinder and recall can); set data.generate=False")
  if not data_config.generate and task.generator == "recall":
    raise ConfigError("data.generate=False: recall has no files to read, it is always "
                      "generated; set data.generate=True")
  sizes = data_config.generate_sizes
  if (not isinstance(sizes, (tuple, list)) or len(sizes) != 3
      or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in sizes)):
    raise ConfigError(f"data.generate_sizes={sizes!r}: need three positive integers "
                      "(train, validation, test), e.g. '(2000,200,200)'")
  _check_int("generate_seed", data_config.generate_seed, 0)
  _check_int("generate_workers", data_config.generate_workers, 1)
  _check_int("num_workers", data_config.num_workers, 0)
  difficulty = data_config.pathfinder_difficulty
  if difficulty not in PATHFINDER_DIFFICULTIES:
    raise ConfigError(f"data.pathfinder_difficulty={difficulty!r}: use one of "
                      f"{PATHFINDER_DIFFICULTIES}")


def _check_recall(config) -> None:
  """data.recall.* describe a dataset, and the model reads it in its own segments."""
  problems = recall_spec(config.data).problems()
  if problems:
    field, why = problems[0]
    raise ConfigError(f"data.recall.{field}={config.data.recall[field]!r}: {why}")
  segments, model_segments = config.data.recall.num_segments, config.model.num_segments
  if model_segments != segments:
    raise ConfigError(
        f"model.num_segments={model_segments} does not match data.recall.num_segments="
        f"{segments}: the recall data has {segments} segments of "
        f"{config.data.recall.segment_len} tokens and the model must read them as such; "
        f"set both to the same value (e.g. --config.model.num_segments={segments})")
