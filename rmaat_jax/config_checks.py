"""`validate_config(config)`: every check on a run's config that needs no data and no device.

The command line runs it first, so that a typo costs seconds, not a data preparation or a
compile; the trainer runs it again once the device count is known. `model.*` is checked by
ModelConfig and `data.*` by the input pipeline (they own those fields); `train.*` and
`distributed.*` here. Every failure is a ConfigError naming the field and the fix.
"""

from __future__ import annotations

import math
import numbers

import ml_collections

from rmaat_jax.data.tasks import check_data_config
from rmaat_jax.errors import ConfigError
from rmaat_jax.models.config import ModelConfig

SECTIONS = ("model", "train", "data")


_POSITIVE = ("num_steps", "batch_size", "eval_every", "checkpoint_every", "log_every",
             "keep_checkpoints")
_NON_NEGATIVE_FLOATS = ("learning_rate", "weight_decay", "grad_clip", "memory_limit_gib")
_COMPUTE_DTYPES = ("float32", "bfloat16")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_train_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """`train.*`; `num_devices` is the global device count the batch is split over."""
  train = config.train
  for name in _POSITIVE:
    value = train.get(name)
    if not _is_int(value) or value <= 0:
      raise ConfigError(f"train.{name}={value!r}: must be a positive integer")
  if train.batch_size % num_devices:
    raise ConfigError(f"train.batch_size={train.batch_size} is not divisible by the "
                      f"{num_devices} devices; use a multiple of {num_devices}")
  for name in _NON_NEGATIVE_FLOATS:
    value = train.get(name, 0.0)
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not 0 <= value < math.inf):
      raise ConfigError(f"train.{name}={value!r}: must be a finite number >= 0")
  warmup = train.get("warmup_steps", 0)
  if not _is_int(warmup) or warmup < 0:  # above num_steps: scaled down (warmup_steps())
    raise ConfigError(f"train.warmup_steps={warmup!r}: must be an integer >= 0")
  batches = train.get("num_eval_batches", 0)
  if not _is_int(batches) or batches < 0:
    raise ConfigError(f"train.num_eval_batches={batches!r}: must be an integer >= 0 "
                      "(0 = the whole split)")
  seed = train.get("seed", 0)
  if not _is_int(seed) or not 0 <= seed < 2 ** 31:  # grain's samplers take 32-bit seeds
    raise ConfigError(f"train.seed={seed!r}: must be an integer in [0, 2**31)")
  if train.get("compute_dtype", "float32") not in _COMPUTE_DTYPES:
    raise ConfigError(f"train.compute_dtype={train.compute_dtype!r}: use one of "
                      f"{_COMPUTE_DTYPES}")


WARMUP_FRACTION = 0.1  # of num_steps, when the configured warmup is longer than the run


def warmup_steps(train: ml_collections.ConfigDict) -> tuple[int, str | None]:
  """(warmup steps the schedule uses, a warning or None).

  A shortened run (`--config.train.num_steps=200` on a config with 1,000 warmup steps) would
  otherwise spend all of it warming up: its warmup becomes 10 % of num_steps instead.
  """
  if train.warmup_steps <= train.num_steps:
    return train.warmup_steps, None
  scaled = int(train.num_steps * WARMUP_FRACTION)
  return scaled, (f"train.warmup_steps={train.warmup_steps} is longer than "
                  f"train.num_steps={train.num_steps}; warming up for {scaled} steps "
                  f"({WARMUP_FRACTION:.0%} of the run) instead")


def check_distributed_config(config: ml_collections.ConfigDict) -> None:
  dist = config.get("distributed")
  if dist is None:
    return
  if not isinstance(dist.get("enabled", False), bool):
    raise ConfigError(f"distributed.enabled={dist.enabled!r}: must be True or False")
  if not dist.get("enabled", False) or not dist.get("coordinator_address", ""):
    return  # disabled, or auto-detected by jax.distributed (SLURM, cloud TPU)
  address, count, index = dist.coordinator_address, dist.num_processes, dist.process_id
  if not isinstance(address, str) or ":" not in address:
    raise ConfigError(f"distributed.coordinator_address={address!r}: use 'host:port'")
  if not _is_int(count) or count < 1:
    raise ConfigError(f"distributed.num_processes={count!r}: must be a positive integer")
  if not _is_int(index) or not 0 <= index < count:
    raise ConfigError(f"distributed.process_id={index!r}: must be in [0, num_processes="
                      f"{count})")


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> ModelConfig:
  """Raises ConfigError naming the first invalid field; returns the model's config.

  `num_devices` is the global device count the batch is split over (1: not yet known).
  """
  for section in SECTIONS:
    if not isinstance(config.get(section), ml_collections.ConfigDict):
      raise ConfigError(f"config has no '{section}' section; start from configs/default.py")
  model_config = ModelConfig.from_config(config.model)
  check_train_config(config, num_devices)
  check_data_config(config)
  check_distributed_config(config)
  return model_config
