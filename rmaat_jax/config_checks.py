"""`validate_config(config)`: every check on a run's config that needs no data and no device.

The one validating entry: the command line runs it first, so that a typo costs a fraction of
a second, not a data preparation or a compile, and then `check_devices` once JAX knows the
devices. `train_and_evaluate`, `get_datasets` and the model take a validated config and do
not check it again. `model.*` is checked by ModelConfig (with the dataset's facts) and
`data.*` by data/tasks.py (they own those fields); `train.*` and `distributed.*` here. Every
failure is a ConfigError naming the field and the fix.
"""

from __future__ import annotations

import logging
import math
import numbers

import ml_collections
import numpy as np

from rmaat_jax.configs import default
from rmaat_jax.data.tasks import check_data_config, model_config
from rmaat_jax.errors import ConfigError
from rmaat_jax.models.config import ModelConfig
from rmaat_jax.models.retention import retention_factors
from rmaat_jax.workdir_config import flat_config

SECTIONS = ("model.", "train.", "data.")


TRAIN_POSITIVE_INTS = ("num_steps", "batch_size", "eval_every", "checkpoint_every",
                       "log_every", "keep_checkpoints")
TRAIN_NON_NEGATIVE_FLOATS = ("learning_rate", "weight_decay", "grad_clip", "memory_limit_gib")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_train_config(config: ml_collections.ConfigDict) -> None:
  """`train.*` (the batch's split over devices: check_devices)."""
  train = config.train
  for name in TRAIN_POSITIVE_INTS:
    value = train[name]
    if not _is_int(value) or value <= 0:
      raise ConfigError(f"train.{name}={value!r}: must be a positive integer")
  for name in TRAIN_NON_NEGATIVE_FLOATS:
    value = train[name]
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not 0 <= value < math.inf):
      raise ConfigError(f"train.{name}={value!r}: must be a finite number >= 0")
  warmup = train.warmup_steps
  if not _is_int(warmup) or warmup < 0:  # above num_steps: scaled down (warmup_steps())
    raise ConfigError(f"train.warmup_steps={warmup!r}: must be an integer >= 0")
  batches = train.num_eval_batches
  if not _is_int(batches) or batches < 0:
    raise ConfigError(f"train.num_eval_batches={batches!r}: must be an integer >= 0 "
                      "(0 = the whole split)")
  seed = train.seed
  if not _is_int(seed) or not 0 <= seed < 2 ** 31:  # grain's samplers take 32-bit seeds
    raise ConfigError(f"train.seed={seed!r}: must be an integer in [0, 2**31)")
  if train.compute_dtype not in COMPUTE_DTYPES:
    raise ConfigError(f"train.compute_dtype={train.compute_dtype!r}: use one of "
                      f"{COMPUTE_DTYPES}")


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
  if not isinstance(dist.enabled, bool):
    raise ConfigError(f"distributed.enabled={dist.enabled!r}: must be True or False")
  if not dist.enabled or not dist.coordinator_address:
    return  # disabled, or auto-detected by jax.distributed (SLURM, cloud TPU)
  address, count, index = dist.coordinator_address, dist.num_processes, dist.process_id
  if not isinstance(address, str) or ":" not in address:
    raise ConfigError(f"distributed.coordinator_address={address!r}: use 'host:port'")
  if not _is_int(count) or count < 1:
    raise ConfigError(f"distributed.num_processes={count!r}: must be a positive integer")
  if not _is_int(index) or not 0 <= index < count:
    raise ConfigError(f"distributed.process_id={index!r}: must be in [0, num_processes="
                      f"{count})")


def validate_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """Raises ConfigError naming the first invalid field; returns the model's config (with
  the dataset's vocabulary, classes, padding id, dual encoder and length)."""
  for section in SECTIONS:
    if not isinstance(config.get(section[:-1]), ml_collections.ConfigDict):
      raise ConfigError(f"config has no '{section[:-1]}' section; start from "
                        "rmaat_jax/configs/default.py")
  # The code reads every field directly: rmaat_jax/configs/default.py is the one place
  # defaults live.
  expected = {k for k in flat_config(default.get_config()) if k.startswith(SECTIONS)}
  missing = sorted(expected - set(flat_config(config)))
  if missing:
    raise ConfigError(f"config has no field {missing[0]}"
                      + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                      + "; start from rmaat_jax/configs/default.py (task configs do)")
  model = ModelConfig.from_config(model_config(config))  # with the dataset's facts
  check_train_config(config)
  check_data_config(config)
  check_distributed_config(config)
  warning = memory_reach_warning(model)
  if warning:
    logging.warning(warning)
  return model


# The recall benchmark's shortest distance at which RMAAT with the paper's retention carried
# nothing from the first segment to the last (experiments/RESULTS.md, "How far the memory
# carries"): 4 segments, where the first segment's memory reaches the last scaled by 0.021.
NO_CARRY_SEGMENTS = 4
NO_CARRY_REACH = float(np.prod(retention_factors(NO_CARRY_SEGMENTS, "paper")[:-1]))


def memory_reach(mode: str, num_segments: int) -> float:
  """The factor by which what segment 1 writes into the memory reaches segment T:
  RF(1, T) * ... * RF(T - 1, T) (1 for "none"; 0 for "reset")."""
  if mode == "reset":
    return 0.0
  factors = retention_factors(num_segments, mode)[:-1]
  return float(np.exp(np.sum(np.log(factors)))) if factors.size else 1.0


def memory_reach_warning(model: ModelConfig) -> str | None:
  """One line when the retention factor scales the memory down further than the recall
  benchmark found it can carry anything; None otherwise."""
  if model.retention in ("none", "reset") or model.num_segments < 2:
    return None
  reach = memory_reach(model.retention, model.num_segments)
  if reach > NO_CARRY_REACH * (1 + 1e-9):
    return None
  rf = retention_factors(model.num_segments, model.retention)
  return (f"model.retention={model.retention!r} scales the memory leaving each of the "
          f"{model.num_segments} segments by RF(t, {model.num_segments}) = {rf[0]:.3g} down to "
          f"{rf[-2]:.3g}: what the first segment writes reaches the last scaled by "
          f"{reach:.2g}, and in the recall benchmark nothing crossed {NO_CARRY_SEGMENTS} such "
          f"segments (reach {NO_CARRY_REACH:.2g}; experiments/RESULTS.md). For a task that "
          f"needs long memory use model.retention=none")


def check_devices(config: ml_collections.ConfigDict, num_devices: int,
                  num_processes: int = 1) -> None:
  """Once JAX knows them: the global batch must split over all devices and processes."""
  batch = config.train.batch_size
  if batch % num_devices:
    raise ConfigError(f"train.batch_size={batch} is not divisible by the {num_devices} "
                      f"devices; use a multiple of {num_devices}")
  if batch % num_processes:
    raise ConfigError(f"train.batch_size={batch}: must be a multiple of the number of "
                      f"processes ({num_processes})")
