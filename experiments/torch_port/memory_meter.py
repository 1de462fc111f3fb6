"""Measuring PyTorch training memory on any device, CPU included.

Two meters, for experiments/benchmarks/compare_memory.py:

- `profile_live_bytes` (the headline figure): the peak of live bytes held by torch's
  allocator over a region of code - every tensor, parameters, gradients, optimizer state and
  transient workspace alike - from the allocation and free records of
  `torch.profiler.profile(profile_memory=True)`. The profiler reports each allocation
  (+nbytes) and each free (-nbytes) with a timestamp; the running total of those records in
  time order, plus the bytes already live when profiling started, is the live total, and its
  maximum inside a region is that region's peak. Sizes are the requested bytes (torch's CPU
  allocator does not cache blocks, and pads each to 64-byte alignment, which is not counted).
  A block allocated before profiling started has an unknown size to the profiler, so its free
  is not reported: such blocks must stay alive through the profiled code and be passed in
  `baseline_bytes` (the training step below profiles a warm-up step too, so that the
  gradients and AdamW state it frees and rebuilds are allocated under the profiler).
- `SavedTensorMeter`: the peak of live storages autograd saves for backward (activations
  only, no workspace, no parameters), through `torch.autograd.graph.saved_tensors_hooks`:
  - each saved tensor is wrapped in a small holder; a storage is counted once, however many
    saved tensors (views) share it, from its first pack until its last holder is released;
  - holders are released when autograd frees that part of the graph (during backward), so
    the meter tracks the *live* total and its peak over forward + backward, including the
    segment that AMRB's replay rebuilds inside its backward;
  - parameter storages are excluded (they are counted once, as parameter bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile, record_function

_REGION = "profile_live_bytes:"


@dataclasses.dataclass(frozen=True)
class LiveBytes:
  """Live allocator bytes over one profiled region (all include `baseline_bytes`)."""

  peak_bytes: int  # the maximum of the live total inside the region
  start_bytes: int  # the live total when the region began
  end_bytes: int  # the live total when it ended
  allocations: int  # allocation records inside the region
  allocated_bytes: int  # their total size


def profile_live_bytes(regions: Sequence[Callable[[], Any]], baseline_bytes: int = 0,
                       device: str = "cpu") -> list[LiveBytes]:
  """Runs `regions` in order under one memory profiler; the live bytes of each.

  `baseline_bytes`: what is live before the call and stays live (see the module docstring);
  it is added to every figure. `device`: whose allocator ("cpu" or "cuda").
  """
  device_type = torch.device(device).type
  activities = [ProfilerActivity.CPU]
  if device_type == "cuda":
    activities.append(ProfilerActivity.CUDA)
  with profile(activities=activities, profile_memory=True) as prof:
    for i, region in enumerate(regions):
      with record_function(f"{_REGION}{i}"):
        region()
  events = prof.profiler.kineto_results.events()
  windows = {}
  for e in events:
    if e.name().startswith(_REGION):
      windows[int(e.name()[len(_REGION):])] = (e.start_ns(), e.end_ns())
  records = sorted(((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and e.nbytes()
                    and e.device_type().name.lower() == device_type),
                   key=lambda r: r[0])
  results = []
  for i in range(len(regions)):
    start, end = windows[i]
    live = baseline_bytes + sum(n for t, n in records if t < start)
    start_bytes, peak, count, allocated = live, live, 0, 0
    for _, n in (r for r in records if start <= r[0] <= end):
      live += n
      peak = max(peak, live)
      count += n > 0
      allocated += max(n, 0)
    results.append(LiveBytes(peak, start_bytes, live, count, allocated))
  return results


def storage_bytes(tensors: Iterable[Tensor | None]) -> int:
  """Bytes of the distinct storages behind `tensors` (a storage shared by views counts once)."""
  seen = {}
  for t in tensors:
    if t is not None:
      storage = t.untyped_storage()
      seen[(t.device, storage.data_ptr())] = storage.nbytes()
  return sum(seen.values())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[Tensor]:
  """The tensors of the optimizer's state (AdamW: step, exp_avg, exp_avg_sq per parameter)."""
  return [v for per_param in optimizer.state.values() for v in per_param.values()
          if torch.is_tensor(v)]


def training_step_live_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             step: Callable[[], Any], inputs: Iterable[Tensor],
                             device: str = "cpu",
                             warmup: Callable[[], Any] | None = None) -> dict[str, int]:
  """The peak live bytes of one training `step` (forward, backward, optimizer update).

  Call on a fresh model and optimizer (no gradients, no optimizer state yet). Profiles a
  warm-up step, `warmup` (default `step`), which allocates the gradients and AdamW state,
  then `step`. Returns, in bytes: "peak" (the measured step's peak), "start" and "end" (its
  live total before and after), "warmup_peak", "baseline" (parameters, buffers and `inputs`,
  live throughout) and "state" (params + buffers + grads + optimizer state + inputs, counted
  from the tensors afterwards). "start" and "end" equal "state" unless a free went unseen or
  the step leaves other tensors alive.
  """
  if any(p.grad is not None for p in model.parameters()) or optimizer.state:
    raise ValueError("training_step_live_bytes needs a model without gradients or optimizer "
                     "state: the warm-up step must allocate them under the profiler")
  persistent = [*model.parameters(), *model.buffers(), *inputs]
  baseline = storage_bytes(persistent)
  warm, measured = profile_live_bytes([warmup or step, step], baseline, device)
  state = storage_bytes([*persistent, *(p.grad for p in model.parameters()),
                         *optimizer_tensors(optimizer)])
  return {"peak": measured.peak_bytes, "start": measured.start_bytes,
          "end": measured.end_bytes, "allocated": measured.allocated_bytes,
          "warmup_peak": warm.peak_bytes, "baseline": baseline, "state": state}


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
  state = tensor_bytes(optimizer_tensors(optimizer)) if optimizer is not None else 0
  return {"params": tensor_bytes(params), "grads": tensor_bytes(p.grad for p in params),
          "optimizer": state}
