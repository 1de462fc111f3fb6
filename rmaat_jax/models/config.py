"""Validated, immutable model configuration.

`config.model` is an ml_collections ConfigDict for users; the modules take this frozen
dataclass instead so that they are hashable and every field is checked once, with an
error that names the field and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rmaat_jax.errors import ConfigError
from rmaat_jax.models.retention import retention_factors

__all__ = ["BOOL_FIELDS", "CHOICES", "ConfigError", "FLOAT_FIELDS", "MAX_DROPOUT_RATE",
           "MIN_DROPOUT_RATE", "ModelConfig", "POSITIVE_INT_FIELDS", "dropout_realises_nothing"]


CHOICES = {
    "attention": ("astro", "softmax", "linear"),
    "position": ("projected", "distance"),
    "retention": ("paper", "stretched", "streaming", "none", "reset"),
    "block_layout": ("post_ln", "pre_ln"),
    # A diagnostic (docs/method.md 4.3): the factors the backward pass scales dL/dmem by.
    "retention_backward": ("exact", "paper", "stretched", "streaming", "none"),
    "backprop": ("bptt", "remat", "amrb"),
    "amrb_replay": ("block", "segment"),
    "pool": ("memory", "mean"),
    "dropout_rng": ("auto", "rbg", "threefry"),
}
POSITIVE_INT_FIELDS = (
    "vocab_size", "num_classes", "seq_len", "num_segments", "num_memory_tokens",
    "emb_dim", "num_heads", "num_layers", "mlp_dim",
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """All model hyper-parameters (docs/method.md sections 1-5); meanings and defaults:
  rmaat_jax/configs/default.py. Build with `from_config`, which fills what a mapping leaves
  out."""

  vocab_size: int
  num_classes: int
  seq_len: int
  num_segments: int
  num_memory_tokens: int
  emb_dim: int
  num_heads: int
  num_layers: int
  mlp_dim: int
  dropout_rate: float
  dropout_rng: str
  attention: str
  position: str
  position_scale: float
  alpha: float
  hebbian_sigmoid: bool
  block_layout: str
  retention: str
  retention_backward: str
  backprop: str
  amrb_replay: str
  pool: str
  dual_encoder: bool
  pad_id: int  # -1: no padding id (Image, Pathfinder: every value 0-255 is a pixel)
  skip_empty_segments: bool

  def __post_init__(self):
    _validate(self)

  @property
  def segment_len(self) -> int:
    return self.seq_len // self.num_segments

  @property
  def head_dim(self) -> int:
    return self.emb_dim // self.num_heads

  @property
  def tokens_per_segment(self) -> int:
    """N = M + S: memory tokens plus segment tokens."""
    return self.num_memory_tokens + self.segment_len

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> ModelConfig:
    """Builds from a ConfigDict / dict; unknown keys are an error (typos must not pass).

    Fields the mapping leaves out take rmaat_jax/configs/default.py's values: the one
    place a default lives (`build_model(dict(vocab_size=17, ...))` from Python needs no full
    config).
    """
    from rmaat_jax.configs import default

    items = dict(config.items())
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - known)
    if unknown:
      raise ConfigError(
          f"model.{unknown[0]}: unknown field; valid fields are {sorted(known)}")
    merged = {**default.get_config().model.to_dict(), **items}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in merged]
    if missing:
      raise ConfigError(
          f"model.{missing[0]} is missing: the dataset sets {', '.join(missing)} when the "
          "trainer builds the model (rmaat_jax.data.tasks.model_config); pass them when "
          "building a model yourself")
    return cls(**merged)


BOOL_FIELDS = ("hebbian_sigmoid", "dual_encoder", "skip_empty_segments")
FLOAT_FIELDS = ("dropout_rate", "position_scale", "alpha")
# models/dropout.py rounds the rate to a multiple of 2**-16; from here on it would be 1.
MAX_DROPOUT_RATE = 1.0 - 2.0 ** -17
# The smallest rate dropout applies: 2**-16. Positive rates up to 2**-17 round to 0.
MIN_DROPOUT_RATE = 2.0 ** -16


def dropout_realises_nothing(rate: float) -> bool:
  """A positive rate that dropout's 16-bit decisions round to 0 (no element dropped)."""
  return rate > 0 and round(rate * 2 ** 16) == 0


def _validate(cfg: ModelConfig) -> None:
  for name in BOOL_FIELDS:
    if not isinstance(getattr(cfg, name), bool):
      raise ConfigError(f"model.{name}={getattr(cfg, name)!r}: must be True or False")
  for name in FLOAT_FIELDS:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"model.{name}={value!r}: must be a number")
  if isinstance(cfg.pad_id, bool) or not isinstance(cfg.pad_id, int):
    raise ConfigError(f"model.pad_id={cfg.pad_id!r}: must be an integer token id, or -1")
  for name in POSITIVE_INT_FIELDS:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"model.{name}={value!r}: must be a positive integer")
  for name, choices in CHOICES.items():
    value = getattr(cfg, name)
    if value not in choices:
      raise ConfigError(f"model.{name}={value!r}: unknown choice; use one of {choices}")
  if cfg.seq_len % cfg.num_segments:
    raise ConfigError(
        f"model.seq_len={cfg.seq_len} is not divisible by model.num_segments="
        f"{cfg.num_segments}; pick num_segments dividing seq_len (or pad seq_len to "
        f"a multiple of it)")
  if cfg.emb_dim % cfg.num_heads:
    raise ConfigError(
        f"model.emb_dim={cfg.emb_dim} is not divisible by model.num_heads={cfg.num_heads}")
  if not 0.0 <= cfg.dropout_rate < MAX_DROPOUT_RATE:
    raise ConfigError(f"model.dropout_rate={cfg.dropout_rate!r}: must be in [0, 1) (below "
                      f"{MAX_DROPOUT_RATE}: dropout decides with 16 random bits, and a rate "
                      "that rounds to 1 would drop everything)")
  if cfg.retention == "reset" and cfg.retention_backward != "exact":
    raise ConfigError(f"model.retention_backward={cfg.retention_backward!r}: with "
                      "model.retention='reset' no gradient crosses a segment; use 'exact'")
  _check_retention_range(cfg)
  if dropout_realises_nothing(cfg.dropout_rate):
    raise ConfigError(f"model.dropout_rate={cfg.dropout_rate!r}: dropout decides with 16 "
                      "random bits, so this rate rounds to 0 and nothing would be dropped; "
                      f"use 0 or at least {MIN_DROPOUT_RATE:.3g} (2**-16)")
  if not 0 < cfg.position_scale < math.inf:
    raise ConfigError(f"model.position_scale={cfg.position_scale!r}: must be finite and > 0")
  if not 0 <= cfg.alpha < math.inf:
    raise ConfigError(f"model.alpha={cfg.alpha!r}: must be finite and >= 0")
  if not -1 <= cfg.pad_id < cfg.vocab_size:
    raise ConfigError(
        f"model.pad_id={cfg.pad_id!r}: must be a token id below vocab_size="
        f"{cfg.vocab_size}, or -1 for no padding")


# The memory and its factors are float32 (or wider); below this a factor is subnormal.
_SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)


def _longest_normal(mode: str, num_segments: int) -> int:
  """The most segments for which every RF(t, T) of `mode` is a normal float32."""
  return max((t for t in range(1, num_segments)
              if retention_factors(t, mode).min() >= _SMALLEST_NORMAL), default=0)


def _check_retention_range(cfg: ModelConfig) -> None:
  """RF(t, T) falls like 0.607^t: from T = 175 segments the last factors are subnormal in
  float32 and from T = 207 they are 0, so the memory (and every gradient through it) would
  silently be multiplied by 0. Refused, naming the limit."""
  for field in ("retention", "retention_backward"):
    mode = getattr(cfg, field)
    if mode not in ("paper", "stretched", "streaming"):
      continue
    smallest = float(retention_factors(cfg.num_segments, mode).min())
    if smallest < _SMALLEST_NORMAL:
      raise ConfigError(
          f"model.{field}={mode!r} with model.num_segments={cfg.num_segments}: the smallest "
          f"retention factor, {smallest:.3g}, is below float32's smallest normal number "
          f"({_SMALLEST_NORMAL:.3g}), so the memory would be scaled by 0 or a subnormal and "
          f"nothing would cross those segments; use model.retention=none, or at most "
          f"{_longest_normal(mode, cfg.num_segments)} segments")
