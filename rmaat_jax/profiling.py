"""Compiled memory and step time of one training gradient (for benchmarks and tests).

Memory comes from XLA's buffer assignment (`compile().memory_analysis()`), which every
backend reports, so the AMRB-vs-BPTT comparison can be made on a CPU. On a GPU, the
runtime peak (`memory_stats()["peak_bytes_in_use"]`) is the number to quote instead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rmaat_jax.memory_check import step_bytes
from rmaat_jax.models import build_model


def _grad_fn(model):
  def loss_fn(params, tokens, labels, key):
    logits = model.apply({"params": params}, tokens, train=True, rngs={"dropout": key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return jax.jit(jax.value_and_grad(loss_fn))


def _example_inputs(model_config: Mapping[str, Any], batch_size: int):
  shape = (batch_size, model_config["seq_len"])
  if model_config.get("dual_encoder", False):
    shape = (batch_size, 2, model_config["seq_len"])
  tokens = jax.random.randint(jax.random.key(1), shape, 1, model_config["vocab_size"])
  labels = jnp.zeros((batch_size,), jnp.int32)
  return tokens.astype(jnp.int32), labels


def gradient_step_profile(model_config: Mapping[str, Any], batch_size: int, *,
                          time_runs: int = 0) -> dict[str, float]:
  """Compiles value_and_grad of the cross-entropy loss and reports its memory.

  Returns bytes of `temp` (activations and workspace: what backprop modes change),
  `arguments`, `outputs`, and `total` = arguments + outputs + temp - aliased. With
  `time_runs > 0` also the median wall time in seconds of that many steps (`step_s`),
  after one warm-up run.
  """
  model = build_model(model_config)
  tokens, labels = _example_inputs(model_config, batch_size)
  params = jax.eval_shape(
      lambda key: model.init({"params": key}, tokens), jax.random.key(0))["params"]
  key = jax.random.key(2)
  compiled = _grad_fn(model).lower(params, tokens, labels, key).compile()
  stats = compiled.memory_analysis()
  result = {
      "temp": float(stats.temp_size_in_bytes),
      "arguments": float(stats.argument_size_in_bytes),
      "outputs": float(stats.output_size_in_bytes),
      "total": float(step_bytes(compiled)),
  }
  if time_runs:
    real_params = jax.jit(lambda k: model.init({"params": k}, tokens))(jax.random.key(0))
    real_params = real_params["params"]
    jax.block_until_ready(compiled(real_params, tokens, labels, key))  # warm-up
    times = []
    for _ in range(time_runs):
      start = time.perf_counter()
      jax.block_until_ready(compiled(real_params, tokens, labels, key))
      times.append(time.perf_counter() - start)
    result["step_s"] = statistics.median(times)
  return result
