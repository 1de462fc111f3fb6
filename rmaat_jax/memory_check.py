"""Fail fast, with advice, when a training step cannot fit in device memory.

Before the first step the trainer compiles the step ahead of time and compares XLA's
buffer assignment (`memory_analysis()`) with what one device has: `bytes_limit` from
`memory_stats()` on GPU/TPU, the available RAM on CPU, or `train.memory_limit_gib` when
set. A step that cannot fit stops the run with one line suggesting `backprop="amrb"`,
instead of an allocator failure deep in the first step or, on CPU, swapping for hours.
An allocation failure that happens anyway at run time gets the same advice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

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
