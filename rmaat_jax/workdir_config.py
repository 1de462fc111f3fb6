"""The config a workdir's checkpoints were trained with, and what may change on resume.

A run records its config in `workdir/config.json` when it starts from scratch. A later run
in the same workdir that finds checkpoints compares its config with that record before it
reads data, compiles or restores anything: a checkpoint of another model (say a different
`model.emb_dim`) would otherwise fail deep inside the restore with a shape error. Only the
fields in RESUMABLE may differ: they change how long, how often and from where a run works,
not what it trains.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from rmaat_jax.data.tasks import TASKS
from rmaat_jax.errors import ConfigError

CONFIG_FILE = "config.json"

# Fields a resumed run may change. `train.num_steps` also stretches the cosine schedule from
# the resumed step on (decay_steps = num_steps).
RESUMABLE = frozenset({
    "train.num_steps", "train.eval_every", "train.checkpoint_every", "train.log_every",
    "train.num_eval_batches", "train.keep_checkpoints", "train.memory_limit_gib",
    "data.data_dir", "data.manual_dir", "data.download", "data.num_workers",
    "data.generate_workers",
})
RESUMABLE_SECTIONS = ("distributed.",)  # how processes find each other
# Evaluating a workdir (--eval_only) needs the same model and data, nothing of training.
EVAL_SECTIONS = ("model.", "data.dataset", "data.generate", "data.pathfinder_difficulty",
                 "data.recall.")
# --eval_only --eval_other_length: a trained model read on more (or fewer) segments of the
# same length. No parameter depends on the number of segments; the data's own length and
# its generated sizes follow.
LENGTH_FIELDS = frozenset({"model.num_segments", "model.seq_len", "data.recall.num_segments",
                           "data.generate_sizes"})


def flat_config(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """{"model.emb_dim": 128, ...}; JSON values (tuples become lists)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(flat_config(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
  return flat


def has_checkpoints(workdir: str) -> bool:
  """True when `workdir/checkpoints` or `workdir/best` holds a finished step (orbax names a
  step's directory by its number; unfinished ones carry a tmp suffix)."""
  for sub in ("checkpoints", "best"):
    path = os.path.join(workdir, sub)
    if os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path)):
      return True
  return False


def _must_match(field: str, eval_only: bool, other_length: bool) -> bool:
  if eval_only:
    return field.startswith(EVAL_SECTIONS) and not (other_length and field in LENGTH_FIELDS)
  return field not in RESUMABLE and not field.startswith(RESUMABLE_SECTIONS)


def differences(saved: dict[str, Any], current: dict[str, Any], eval_only: bool = False,
                other_length: bool = False) -> list[tuple[str, Any, Any]]:
  """(field, checkpoint's value, this run's value) for each field that may not change."""
  fields = sorted(set(saved) | set(current))
  return [(f, saved.get(f, _ABSENT), current.get(f, _ABSENT)) for f in fields
          if _must_match(f, eval_only, other_length)
          and saved.get(f, _ABSENT) != current.get(f, _ABSENT)]


def segment_length(flat: dict[str, Any]) -> int:
  """Tokens per segment of a flat config: model.seq_len (or the dataset's length) divided by
  model.num_segments."""
  seq_len = flat.get("model.seq_len") or 0
  if not seq_len:
    if flat.get("data.dataset") == "recall":
      seq_len = flat["data.recall.segment_len"] * flat["data.recall.num_segments"]
    else:
      seq_len = TASKS[flat["data.dataset"]].seq_len
  return seq_len // flat["model.num_segments"]


_ABSENT = object()  # a field one of the two configs does not have (another code version)


def _show(value: Any) -> str:
  return "(absent)" if value is _ABSENT else json.dumps(value)


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  eval_only: bool = False, other_length: bool = False) -> None:
  """Raises ConfigError if `workdir` holds checkpoints trained with a different config.

  `other_length` (with `eval_only`): the number of segments may differ (LENGTH_FIELDS), the
  segment length may not."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = flat_config(config)
  if os.path.exists(path) and has_checkpoints(workdir):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise ConfigError(f"{path} cannot be read ({e}); it records the config of the "
                        "checkpoints in this workdir: restore it, or use a fresh --workdir"
                        ) from e
    diff = differences(saved, current, eval_only, other_length)
    if other_length and not diff and segment_length(saved) != segment_length(current):
      raise ConfigError(
          f"--eval_other_length reads more or fewer segments of the trained length: the "
          f"checkpoints in {workdir} read segments of {segment_length(saved)} tokens, this "
          f"config {segment_length(current)}; change model.num_segments (and the data's "
          "length) only")
    if diff:
      changes = ", ".join(f"{f} {_show(old)} -> {_show(new)}" for f, old, new in diff)
      fix = (f"rerun with the original values (recorded in {path}) to resume, or give a "
             "fresh --workdir to start a new run")
      if eval_only:
        fix = f"evaluate with the original values (recorded in {path})"
        if not other_length and {f for f, _, _ in diff} <= LENGTH_FIELDS:
          fix += "; to evaluate the trained model at another length, add --eval_other_length"
      raise ConfigError(f"--workdir {workdir} holds checkpoints trained with another config "
                        f"({changes}); {fix}")


def record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json (after check_workdir passed; the chief process only)."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(flat_config(config), f, indent=1, sort_keys=True)
  os.replace(tmp, path)  # atomic: a killed run never leaves half a record
