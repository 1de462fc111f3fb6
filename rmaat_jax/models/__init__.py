"""Model package: `build_model(config.model)` is the entry point used by the trainer.

`ModelConfig` (config.py) needs neither JAX nor Flax, so checking a config stays cheap;
`build_model` and `RMAATClassifier` are imported on first use.
"""

from __future__ import annotations

from rmaat_jax.models.config import ConfigError, ModelConfig

__all__ = ["ConfigError", "ModelConfig", "RMAATClassifier", "build_model"]


def __getattr__(name: str):
  if name in ("RMAATClassifier", "build_model"):
    from rmaat_jax.models import classifier

    return getattr(classifier, name)
  raise AttributeError(f"module 'rmaat_jax.models' has no attribute {name!r}")
