"""Counting what PyTorch keeps for backward: peak live bytes of saved-tensor storages.

On a CPU, torch has no allocator statistics, so the benchmark measures the tensors that
autograd saves for the backward pass (the activations a backprop mode decides to keep),
through `torch.autograd.graph.saved_tensors_hooks`:

- each saved tensor is wrapped in a small holder; a storage is counted once, however many
  saved tensors (views) share it, from its first pack until its last holder is released;
- holders are released when autograd frees that part of the graph (during backward), so
  the meter tracks the *live* total and its peak over forward + backward, including the
  segment that AMRB's replay rebuilds inside its backward;
- parameter storages are excluded (they are counted once, as parameter bytes).

This is not the same measurement as XLA's compiled `memory_analysis()` (which includes
transient workspace and gradient buffers); the benchmark labels the two accordingly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class _Held:
  """A saved tensor plus the bookkeeping that runs when autograd drops it."""

  __slots__ = ("meter", "key", "tensor")

  def __init__(self, meter: SavedTensorMeter, key: tuple[Any, int], tensor: Tensor):
    self.meter, self.key, self.tensor = meter, key, tensor

  def __del__(self):
    self.meter._release(self.key)


class SavedTensorMeter:
  """Context manager: `with SavedTensorMeter(model.parameters()) as meter: ...`.

  After the block, `meter.peak_bytes` is the peak of live unique saved storages and
  `meter.live_bytes` what is still held (0 once backward has freed the graph).
  """

  def __init__(self, exclude: Iterable[Tensor] = ()):
    self._excluded = {self._key(t) for t in exclude}
    self._counts: dict[tuple[Any, int], int] = {}
    self._sizes: dict[tuple[Any, int], int] = {}
    self.live_bytes = 0
    self.peak_bytes = 0
    self.num_packed = 0
    self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

  @staticmethod
  def _key(t: Tensor) -> tuple[Any, int]:
    return (t.device, t.untyped_storage().data_ptr())

  def _pack(self, t: Tensor) -> Any:
    key = self._key(t)
    if key in self._excluded:
      return t
    self.num_packed += 1
    count = self._counts.get(key, 0)
    if count == 0:
      self._sizes[key] = t.untyped_storage().nbytes()
      self.live_bytes += self._sizes[key]
      self.peak_bytes = max(self.peak_bytes, self.live_bytes)
    self._counts[key] = count + 1
    return _Held(self, key, t)

  @staticmethod
  def _unpack(packed: Any) -> Tensor:
    return packed.tensor if isinstance(packed, _Held) else packed

  def _release(self, key: tuple[Any, int]) -> None:
    self._counts[key] -= 1
    if self._counts[key] == 0:
      del self._counts[key]
      self.live_bytes -= self._sizes.pop(key)

  def __enter__(self) -> SavedTensorMeter:
    self._hooks.__enter__()
    return self

  def __exit__(self, *exc) -> None:
    self._hooks.__exit__(*exc)


def tensor_bytes(tensors: Iterable[Tensor | None]) -> int:
  return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def training_state_bytes(model: torch.nn.Module,
                         optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
  """Bytes of parameters, gradients and optimiser state (AdamW: step, exp_avg, exp_avg_sq)."""
  params = list(model.parameters())
  state = 0
  if optimizer is not None:
    for per_param in optimizer.state.values():
      state += tensor_bytes(v for v in per_param.values() if torch.is_tensor(v))
  return {"params": tensor_bytes(params), "grads": tensor_bytes(p.grad for p in params),
          "optimizer": state}
