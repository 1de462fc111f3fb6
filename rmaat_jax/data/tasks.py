"""What each `data.dataset` is, and the checks of `data.*` that need no data.

Kept free of TFDS, grain and TensorFlow so that validating a config (the command line
does it first) costs milliseconds: the input pipeline (pipeline.py) reads these tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rmaat_jax.data import listops, pathfinder, preprocess
from rmaat_jax.errors import ConfigError

__all__ = ["TASKS", "Task", "check_data_config", "check_model_config", "get_task"]


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
  length: int | None = None  # fixed length of pixel tasks
  generator: str = ""  # "listops" | "pathfinder" when data.generate may be used
  download_url: str = ""  # catalog datasets: checked before TFDS downloads (fails fast)
  offline: str = ""  # what to do without internet (catalog datasets)


TASKS: dict[str, Task] = {
    "listops": Task("LRA ListOps", ("train", "validation", "test"), "tokens",
                    listops.VOCAB_SIZE, 10, listops.PAD_ID, builder="LraListops",
                    generator="listops"),
    "text": Task("LRA Text (IMDb bytes; LRA evaluates on test for validation too)",
                 ("train", "test", "test"), "text", preprocess.BYTE_VOCAB_SIZE, 2, 0,
                 catalog="imdb_reviews",
                 download_url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                 offline="prepare imdb_reviews on a machine with internet and copy its "
                 "folder into data.data_dir"),
    "retrieval": Task("LRA Retrieval (AAN)", ("train", "validation", "test"), "pair",
                      preprocess.BYTE_VOCAB_SIZE, 2, 0, builder="LraRetrieval"),
    "image": Task("LRA Image (CIFAR-10 grayscale)", ("train[:90%]", "train[90%:]", "test"),
                  "image_rgb", preprocess.PIXEL_VOCAB_SIZE, 10, -1, catalog="cifar10",
                  length=1024,
                  download_url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                  offline="use the substitute "
                  "--config.data.dataset=fashion_mnist (Debian's dataset-fashion-mnist; results "
                  "are labelled and not comparable with CIFAR-10), or copy a prepared cifar10 "
                  "into data.data_dir"),
    "fashion_mnist": Task(
        "Image (Fashion-MNIST) - offline SUBSTITUTE for LRA Image, not comparable with "
        "CIFAR-10 results", ("train[:90%]", "train[90%:]", "test"), "tokens",
        preprocess.PIXEL_VOCAB_SIZE, 10, -1, builder="FashionMnistDebian",
        length=1024),
    "pathfinder": Task("LRA Pathfinder-32 (hard)", ("train", "validation", "test"), "tokens",
                       preprocess.PIXEL_VOCAB_SIZE, 2, -1, builder="LraPathfinder32",
                       length=1024, generator="pathfinder"),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise ConfigError(f"data.dataset={name!r}: unknown dataset; use one of {sorted(TASKS)}")
  return TASKS[name]


def check_model_config(model_config: Mapping[str, Any], task: Task, name: str) -> None:
  """The model must be able to read the data: vocabulary, classes, length, padding."""
  if model_config["vocab_size"] < task.vocab_size:
    raise ConfigError(f"model.vocab_size={model_config['vocab_size']} is smaller than "
                      f"{name}'s vocabulary ({task.vocab_size}); set it to {task.vocab_size}")
  if model_config["num_classes"] != task.num_classes:
    raise ConfigError(f"model.num_classes={model_config['num_classes']}: {name} has "
                      f"{task.num_classes} classes")
  if task.length is not None and model_config["seq_len"] != task.length:
    raise ConfigError(f"model.seq_len={model_config['seq_len']}: {name} has exactly "
                      f"{task.length} tokens per example; set model.seq_len={task.length}")
  if model_config.get("pad_id", 0) != task.pad_id:
    raise ConfigError(f"model.pad_id={model_config.get('pad_id', 0)}: {name} uses "
                      f"pad_id={task.pad_id}" + (" (every pixel value is a real token)"
                                                 if task.pad_id < 0 else ""))
  if model_config.get("dual_encoder", False) != (task.kind == "pair"):
    raise ConfigError(f"model.dual_encoder={model_config.get('dual_encoder', False)}: "
                      f"{name} needs dual_encoder={task.kind == 'pair'}")


_DIFFICULTIES = tuple(pathfinder.CONTOUR_LENGTHS)


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"data.{name}={value!r}: must be an integer >= {minimum}")


def check_data_config(config) -> None:
  """Every `data.*` value, and that the model can read the data; before any file is read."""
  data_config, name = config.data, config.data.dataset
  task = get_task(name)
  check_model_config(config.model, task, name)
  for field in ("download", "generate"):
    if not isinstance(data_config.get(field, False), bool):
      raise ConfigError(f"data.{field}={data_config.get(field)!r}: must be True or False")
  if data_config.get("generate", False) and not task.generator:
    raise ConfigError(f"data.generate=True: {name} cannot be generated (only listops and "
                      "pathfinder can); set data.generate=False")
  sizes = data_config.get("generate_sizes", ())
  if (not isinstance(sizes, (tuple, list)) or len(sizes) != 3
      or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in sizes)):
    raise ConfigError(f"data.generate_sizes={sizes!r}: need three positive integers "
                      "(train, validation, test), e.g. '(2000,200,200)'")
  _check_int("generate_seed", data_config.get("generate_seed", 0), 0)
  _check_int("generate_workers", data_config.get("generate_workers", 1), 1)
  _check_int("num_workers", data_config.get("num_workers", 0), 0)
  difficulty = data_config.get("pathfinder_difficulty", "hard")
  if difficulty not in _DIFFICULTIES:
    raise ConfigError(f"data.pathfinder_difficulty={difficulty!r}: use one of "
                      f"{_DIFFICULTIES}")
