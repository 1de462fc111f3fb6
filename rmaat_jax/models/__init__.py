"""Model package: `build_model(config.model)` is the entry point used by the trainer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rmaat_jax.models.classifier import RMAATClassifier
from rmaat_jax.models.config import ConfigError, ModelConfig

__all__ = ["ConfigError", "ModelConfig", "RMAATClassifier", "build_model"]


def build_model(model_config: Mapping[str, Any] | ModelConfig,
                dtype: Any = jnp.float32) -> nn.Module:
  """Validates `config.model` (ConfigError names the bad field) and builds the module.

  `model.init({"params": key}, tokens, train=False)` and
  `model.apply(variables, tokens, train=True, rngs={"dropout": key})` give logits
  [B, num_classes]; tokens are int32 [B, seq_len] ([B, 2, seq_len] with dual_encoder).
  `dtype` is the segment encoder's compute dtype (e.g. jnp.bfloat16); parameters, their
  gradients and the logits stay float32.
  """
  cfg = (model_config if isinstance(model_config, ModelConfig)
         else ModelConfig.from_config(model_config))
  return RMAATClassifier(cfg, dtype)
