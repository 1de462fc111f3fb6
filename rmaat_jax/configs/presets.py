"""Presets for the task configs, in ml_collections' config-string form:

    --config configs/lra_image.py:rmt          the RMT baseline at the task's size
    --config configs/lra_listops.py:rmt,cpu    the same model, sized for 2 CPU cores

Model presets (at most one; the paper's comparison, docs/method.md):
  rmaat  astromorphic attention, AMRB, retention factor (the default)
  rmt    softmax attention, BPTT, no retention factor (Recurrent Memory Transformer)
  rlt    linear attention (elu + 1), BPTT, no retention factor (Recurrent Linear Transformer)
Size preset:
  cpu    a small model and step count that trains on 2 CPU cores in minutes
Any field can still be overridden after a preset: `--config.train.num_steps=2000`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from rmaat_jax.errors import ConfigError

MODEL_PRESETS: dict[str, dict[str, str]] = {
    "rmaat": dict(attention="astro", backprop="amrb", retention="paper"),
    "rmt": dict(attention="softmax", backprop="bptt", retention="none"),
    "rlt": dict(attention="linear", backprop="bptt", retention="none"),
}
SIZE_PRESETS = ("cpu",)
PRESETS = (*MODEL_PRESETS, *SIZE_PRESETS)

# The :cpu model, the same for every task so that curves across tasks compare.
CPU_MODEL = dict(emb_dim=64, num_heads=2, num_layers=1, mlp_dim=128)
CPU_TRAIN = dict(batch_size=32, learning_rate=1e-3, eval_every=100, checkpoint_every=100,
                 num_eval_batches=32, log_every=50)


def parse(presets: str | None) -> tuple[str, bool]:
  """'rmt,cpu' -> ("rmt", True); ConfigError naming the valid presets otherwise."""
  names = [name.strip() for name in (presets or "").split(",") if name.strip()]
  unknown = [name for name in names if name not in PRESETS]
  if unknown:
    raise ConfigError(
        f"unknown config preset {unknown[0]!r}; valid presets: {', '.join(PRESETS)} "
        "(at most one of rmaat/rmt/rlt, plus cpu; e.g. configs/lra_listops.py:rmt,cpu)")
  models = [name for name in names if name in MODEL_PRESETS]
  if len(models) > 1:
    raise ConfigError(f"config presets {' and '.join(models)} both choose the model; "
                      f"give at most one of {', '.join(MODEL_PRESETS)}")
  return (models[0] if models else "rmaat"), "cpu" in names


def apply(config: ml_collections.ConfigDict, presets: str | None, *,
          cpu_train: Mapping[str, Any], cpu_data: Mapping[str, Any] | None = None
          ) -> ml_collections.ConfigDict:
  """Applies `presets` ('', 'rmt', 'rlt,cpu', ...) to a task config; returns it.

  `cpu_train` / `cpu_data`: the task's own :cpu step count, warmup and data sizes (added to
  CPU_MODEL and CPU_TRAIN).
  """
  model, cpu = parse(presets)
  config.model.update(MODEL_PRESETS[model])
  if cpu:
    config.model.update(CPU_MODEL)
    config.train.update({**CPU_TRAIN, **cpu_train})
    config.data.update(dict(cpu_data or {}))
  return config
