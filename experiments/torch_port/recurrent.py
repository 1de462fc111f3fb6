"""The recurrence over segments in PyTorch, with BPTT, remat and AMRB backprop.

    mem_{t+1} = RF(t, T) * Z_t[:, :M]   for t = 1..T-1,     output Z_T

- "bptt":  a Python loop; autograd stores every segment's activations.
- "remat": each segment under torch.utils.checkpoint (non-reentrant): activations are
  recomputed segment by segment during backward, memory like AMRB. Kept for parity with the
  JAX modes; it is torch's generic tool rather than the paper's algorithm.
- "amrb":  `AMRBFunction`, the paper's Astrocytic Memory Replay Backpropagation written as
  a torch.autograd.Function (the analogue of the JAX custom_vjp). Forward: all segments
  under no_grad, keeping only the memory entering each segment (the replay buffer
  [T, B, M, d]). Backward: a reverse loop that recomputes segment t with grad enabled from
  its stored memory (detached, requires_grad), backpropagates dL/dZ_T (t = T) or dL/dmem_{t+1}
  through it with torch.autograd.grad, accumulates the parameter gradients and hands
  dL/dmem_t to segment t - 1. The recomputation goes block by block (`replay_blocks`,
  amrb_replay="block", JAX's default) or over the whole segment at once ("segment").
  Because it is a Function, `loss.backward()` on the model's logits runs it: the same
  training loop serves every mode.

With `skip_pad_id`, a segment t >= 2 made only of that id is skipped per example (the memory
passes unchanged, no RF; the output stays the last real segment's Z), as in JAX.

Every mode calls the same `segment_step(mem, tokens, rs, generator)`; dropout draws from a
generator seeded by (step seed, segment index), so AMRB's replay sees the forward's masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

BACKPROP_MODES = ("bptt", "remat", "amrb")
# (mem [B, M, d], tokens [B, S], rs (R per layer) or None, generator) -> Z [B, M + S, d]
SegmentStep = Callable[[Tensor, Tensor, "tuple[Tensor, ...] | None",
                        "torch.Generator | None"], Tensor]


def segment_generator(seed: int | None, t: int, device: torch.device
                      ) -> torch.Generator | None:
  """Dropout generator of segment t (None: no dropout), like JAX's fold_in(key, t)."""
  if seed is None:
    return None
  generator = torch.Generator(device=device)
  generator.manual_seed((seed * 1_000_003 + t) % (2 ** 63))
  return generator


def _as_rs(rs: Sequence[Tensor]) -> tuple[Tensor, ...] | None:
  return tuple(rs) if rs else None


def _skipped(tokens: Tensor, t: int, skip_pad_id: int | None) -> Tensor | None:
  """[B, 1, 1] True where segment t (not the first) is all padding; None: no skipping."""
  if skip_pad_id is None or t == 0:
    return None
  return (tokens == skip_pad_id).all(dim=1)[:, None, None]


def _loop(step: SegmentStep, mem0: Tensor, segments: Tensor, rf: np.ndarray,
          rs: tuple[Tensor, ...] | None, seed: int | None, num_memory: int,
          remat: bool = False, skip_pad_id: int | None = None
          ) -> tuple[Tensor, list[Tensor]]:
  """Runs all T segments; returns Z_T and the memories entering each segment."""
  mem, memories, z = mem0, [], None
  for t in range(segments.shape[0]):
    memories.append(mem)
    generator = segment_generator(seed, t, mem0.device)
    if remat:
      z_t = checkpoint(step, mem, segments[t], rs, generator, use_reentrant=False)
    else:
      z_t = step(mem, segments[t], rs, generator)
    skipped = _skipped(segments[t], t, skip_pad_id)
    # rf[T-1] scales a memory no segment reads (as in the JAX loop); it is not computed.
    if t + 1 < segments.shape[0]:
      mem_next = float(rf[t]) * z_t[:, :num_memory]
      mem = mem_next if skipped is None else torch.where(skipped, mem, mem_next)
    z = z_t if skipped is None else torch.where(skipped, z, z_t)
  return z, memories


class AMRBFunction(torch.autograd.Function):
  """Z_T = recurrence(mem0, segments) with the replay backward described above.

  Inputs after the non-tensor ones: mem0, then the R matrices (one per layer, or none),
  then every parameter the segment step reads. Gradients are returned for all of those, so
  autograd carries them on to memory_init, the position parameters E and the weights.
  """

  @staticmethod
  def forward(ctx, step: SegmentStep, segments: Tensor, rf: np.ndarray, seed: int | None,
              num_memory: int, skip_pad_id: int | None, replay: str, num_rs: int,
              mem0: Tensor, *tensors: Tensor) -> Tensor:
    rs = _as_rs(tensors[:num_rs])
    # Function.forward already runs without grad; nothing inside is recorded.
    z_last, memories = _loop(step, mem0, segments, rf, rs, seed, num_memory,
                             skip_pad_id=skip_pad_id)
    # The replay buffer [T, B, M, d] is all that is kept, plus the integer tokens.
    ctx.save_for_backward(torch.stack(memories), segments, *tensors[:num_rs])
    ctx.step, ctx.rf, ctx.seed, ctx.num_memory = step, rf, seed, num_memory
    ctx.skip_pad_id, ctx.replay = skip_pad_id, replay
    ctx.params = tensors[num_rs:]  # leaf parameters: referenced, not copies
    return z_last

  @staticmethod
  def backward(ctx, dz_last: Tensor):
    memories, segments, *rs_saved = ctx.saved_tensors
    params = ctx.params
    last = segments.shape[0] - 1
    with torch.enable_grad():
      # R is computed once per step outside the Function; its gradient is accumulated over
      # segments here and returned, so autograd takes it back to E.
      rs = [r.detach().requires_grad_(r.requires_grad) for r in rs_saved]
      wrt_rs = [r for r in rs if r.requires_grad]
      wrt_params = [p for p in params if p.requires_grad]
      grads_rs = [torch.zeros_like(r) for r in wrt_rs]
      grads_params = [torch.zeros_like(p) for p in wrt_params]
      sums = {id(x): g for x, g in zip(wrt_rs + wrt_params, grads_rs + grads_params,
                                      strict=True)}
      # dL/dZ_T carried back to the segment that produced the output, and dL/dmem_{t+1}.
      dz, dmem = dz_last, torch.zeros_like(memories[0])
      for t in range(last, -1, -1):
        mem_t = memories[t].detach().requires_grad_(True)
        generator = segment_generator(ctx.seed, t, memories.device)
        # mem_{t+1} = RF(t, T) * Z_t[:, :M]: dZ_t = dz + RF(t, T) dL/dmem_{t+1} on memory rows.
        seed = dz.clone()
        seed[:, :ctx.num_memory] += float(ctx.rf[t]) * dmem
        skipped = _skipped(segments[t], t, ctx.skip_pad_id)
        if skipped is not None:
          seed = torch.where(skipped, torch.zeros_like(seed), seed)
        if ctx.replay == "block":
          dmem_t = replay_blocks(ctx.step, mem_t, segments[t], _as_rs(rs), generator, seed,
                                 sums)
        else:  # Z_t is not kept: segment t's graph is freed when _backprop returns
          dmem_t = _backprop(ctx.step(mem_t, segments[t], _as_rs(rs), generator), seed, mem_t,
                             [*wrt_rs, *wrt_params], sums)
        if skipped is None:
          dmem, dz = dmem_t, torch.zeros_like(dz)
        else:  # a skipped segment passes both cotangents through
          dmem = torch.where(skipped, dmem, dmem_t)
          dz = torch.where(skipped, dz, torch.zeros_like(dz))
        del seed
    it_rs, it_params = iter(grads_rs), iter(grads_params)
    d_rs = [next(it_rs) if r.requires_grad else None for r in rs]
    d_params = [next(it_params) if p.requires_grad else None for p in params]
    return (None, None, None, None, None, None, None, None, dmem, *d_rs, *d_params)


def _backprop(output: Tensor, cotangent: Tensor, x: Tensor, weights: Sequence[Tensor],
              sums: dict[int, Tensor]) -> Tensor:
  """Backpropagates `cotangent` from `output`: adds each weight's gradient to its sum in
  `sums` (keyed by id) and returns the gradient with respect to `x`."""
  grads = torch.autograd.grad(output, [x, *weights], cotangent, allow_unused=True)
  for w, g in zip(weights, grads[1:], strict=True):
    if g is None:
      continue
    if id(w) not in sums:
      raise ValueError(f"a tensor of shape {tuple(w.shape)} that the segment step reads "
                       "requires grad but is not among run_segments' params")
    sums[id(w)].add_(g)
  return grads[0]


def replay_blocks(step, mem: Tensor, tokens: Tensor, rs: tuple[Tensor, ...] | None,
                  generator: torch.Generator | None, dz: Tensor,
                  sums: dict[int, Tensor]) -> Tensor:
  """Backpropagates dz = dL/dZ through one segment block by block (amrb_replay="block",
  as JAX's recurrent.replay_segment); returns dL/dmem and adds the weight gradients to
  `sums` (keyed by id of each tensor that requires grad).

  A no-grad pass keeps each block's input and the dropout generator's state before it;
  then, from the last block to the first, the block is recomputed with grad from its input
  and state and backpropagated, so one block's graph is alive at a time. `step` is the
  SegmentEncoder (its `embed`, `key_mask` and `block`).
  """
  layers = step.cfg.num_layers
  mask = step.key_mask(mem, tokens)
  inputs, states = [], []
  with torch.no_grad():
    x = step.embed(mem, tokens)
    for layer in range(layers):
      inputs.append(x)
      states.append(None if generator is None else generator.get_state())
      if layer + 1 < layers:
        x = step.block(layer)(x, mask, None if rs is None else rs[layer], generator)
  dx = dz
  for layer in reversed(range(layers)):
    if generator is not None:
      generator.set_state(states[layer])
    x, inputs[layer] = inputs[layer].requires_grad_(True), None
    block, r = step.block(layer), None if rs is None else rs[layer]
    weights = [w for w in [*([] if r is None else [r]), *block.parameters()] if w.requires_grad]
    dx = _backprop(block(x, mask, r, generator), dx, x, weights, sums)
    del x  # this block's input, before the next block is recomputed
  embed_weights = [w for name, w in step.named_parameters()
                   if not name.startswith("block_") and w.requires_grad]
  return _backprop(step.embed(mem, tokens), dx, mem, embed_weights, sums)


def run_segments(step: SegmentStep, params: Sequence[Tensor], mem0: Tensor,
                 segments: Tensor, rf: np.ndarray, rs: tuple[Tensor, ...] | None,
                 seed: int | None, *, backprop: str, num_memory: int,
                 skip_pad_id: int | None = None, amrb_replay: str = "block") -> Tensor:
  """Z_T [B, M + S, d] of the recurrence over `segments` [T, B, S] from `mem0` [B, M, d].

  `params` are the tensors `step` reads (needed by AMRB to return their gradients).
  `amrb_replay`: "block" (`replay_blocks`; `step` must be a SegmentEncoder) or "segment"
  (the whole segment under one autograd graph, the paper's replay).
  """
  if segments.shape[0] != len(rf):
    raise ValueError(f"{segments.shape[0]} segments but {len(rf)} retention factors")
  if backprop in ("bptt", "remat"):
    return _loop(step, mem0, segments, rf, rs, seed, num_memory, remat=backprop == "remat",
                 skip_pad_id=skip_pad_id)[0]
  if backprop == "amrb":
    rs_list = list(rs or ())
    if not torch.is_grad_enabled():  # inference: no replay buffer needed
      return _loop(step, mem0, segments, rf, rs, seed, num_memory, skip_pad_id=skip_pad_id)[0]
    if amrb_replay not in ("block", "segment"):
      raise ValueError(f"unknown amrb_replay {amrb_replay!r}; use 'block' or 'segment'")
    if amrb_replay == "block" and not all(
        hasattr(step, name) for name in ("cfg", "embed", "key_mask", "block")):
      raise ValueError("amrb_replay='block' replays block by block and needs a "
                       "SegmentEncoder as the step (embed, key_mask, block); use "
                       "amrb_replay='segment' for another callable")
    return AMRBFunction.apply(step, segments, rf, seed, num_memory, skip_pad_id, amrb_replay,
                              len(rs_list), mem0, *rs_list, *params)
  raise ValueError(f"unknown backprop mode {backprop!r}; use one of {BACKPROP_MODES}")
