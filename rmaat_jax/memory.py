"""Device memory of a training step: does it fit, what does it need, what did it use.

- Before the first step the trainer compiles the step ahead of time and compares XLA's
  buffer assignment (`memory_analysis()`) with what one device has: `bytes_limit` from
  `memory_stats()` on GPU/TPU, the available RAM on CPU, or `train.memory_limit_gib` when
  set. A step that cannot fit stops the run with one line suggesting `backprop="amrb"`,
  instead of an allocator failure deep in the first step or, on CPU, swapping for hours.
  An allocation failure that happens anyway at run time gets the same advice.
- `peak_memory()`: the runtime peak the trainer logs where the backend reports it (GPU).
- `gradient_step_profile()`: compiled memory and step time of one training gradient, for
  benchmarks and tests. XLA's buffer assignment is reported by every backend, so the
  AMRB-vs-BPTT comparison can be made on a CPU; on a GPU the runtime peak is the number to
  quote instead.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rmaat_jax.errors import UserError

_GIB = 2 ** 30


class OutOfMemoryError(UserError, MemoryError):
  """The training step does not fit in one device's memory."""


def step_bytes(compiled: Any) -> int | None:
  """Bytes one device needs for a compiled step (arguments + outputs + temporaries)."""
  analysis = compiled.memory_analysis()
  if analysis is None:  # not every backend reports it
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def _available_ram() -> int | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def device_memory_limit(device: jax.Device) -> int | None:
  """What one device may allocate: the allocator's limit, else (CPU) the free RAM."""
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  return _available_ram() if device.platform == "cpu" else None


def advice(backprop: str) -> str:
  if backprop != "amrb":
    return (f"with model.backprop='{backprop}' memory grows with the number of segments; "
            "use --config.model.backprop=amrb (exact gradients, one memory per segment "
            "stored), or lower train.batch_size or model.seq_len")
  return ("lower train.batch_size (per device), model.seq_len per segment "
          "(raise model.num_segments) or model.emb_dim, or use more devices")


def check_fits(compiled: Any, device: jax.Device, backprop: str,
               limit_gib: float = 0.0) -> int | None:
  """Raises OutOfMemoryError if the compiled step needs more than the device has.

  `limit_gib` > 0 overrides the device's limit (e.g. a share of a GPU). Returns the bytes
  the step needs, or None where the backend does not say.
  """
  need = step_bytes(compiled)
  limit = int(limit_gib * _GIB) if limit_gib > 0 else device_memory_limit(device)
  if need is not None and limit is not None and need > limit:
    raise OutOfMemoryError(
        f"out of memory: one training step needs {need / _GIB:.2f} GiB on each "
        f"{device.platform} device but {limit / _GIB:.2f} GiB is available; "
        f"{advice(backprop)}")
  return need


def is_out_of_memory(error: BaseException) -> bool:
  if isinstance(error, MemoryError):
    return True
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def advise_on_oom(backprop: str) -> Iterator[None]:
  """Turns an allocation failure at run time into OutOfMemoryError with the same advice."""
  try:
    yield
  except OutOfMemoryError:
    raise
  except Exception as error:  # XlaRuntimeError (GPU/TPU allocator), MemoryError (host)
    if not is_out_of_memory(error):
      raise
    text = str(error).strip()
    first = text.splitlines()[0][:200] if text else type(error).__name__
    raise OutOfMemoryError(f"out of memory during training ({first}); "
                           f"{advice(backprop)}") from error


def peak_memory() -> dict[str, float]:
  """{"peak_memory_gib": ...} of the first local device where the backend reports it."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" not in stats:
    return {}
  return {"peak_memory_gib": stats["peak_bytes_in_use"] / _GIB}


# --- benchmarks: one gradient step's compiled memory and time ----------------------------

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
                          time_runs: int = 0, dtype: Any = jnp.float32) -> dict[str, float]:
  """Compiles value_and_grad of the cross-entropy loss and reports its memory.

  Returns bytes of `temp` (activations and workspace: what backprop modes change),
  `arguments`, `outputs`, and `total` = arguments + outputs + temp - aliased. With
  `time_runs > 0` also the median wall time in seconds of that many steps (`step_s`),
  after one warm-up run. `dtype`: the segment encoder's compute dtype (as
  train.compute_dtype; parameters stay float32).
  """
  from rmaat_jax.models import build_model  # the trainer's import of this module stays light

  model = build_model(model_config, dtype)
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
