"""The recurrence over segments and its three backprop modes (docs/method.md).

    mem_{t+1} = RF(t, T) * Z_t[:, :M]   for t = 1..T-1,     output Z_T

or, with `reset_memory` (`model.retention="reset"`, the control that cuts the memory),
mem_{t+1} = mem_1: every segment starts from the learned initial memory, so nothing crosses
a segment boundary. `rf_backward` (a diagnostic, `model.retention_backward`) makes the
backward pass scale dL/dmem_{t+1} by other factors than the forward's RF: the gradient is
then no longer the loss's, which is the point of the experiment (docs/method.md section 4.3).

- "bptt":  plain `lax.scan`; autodiff stores every segment's activations.
- "remat": the segment step under `jax.checkpoint(policy=nothing_saveable)`.
- "amrb":  an explicit `jax.custom_vjp`. The forward keeps only the memories entering
  each segment (the replay buffer, [T, B, M, d]); the backward is a reverse scan that
  replays segment t from (weights, mem_t, tokens_t), seeded with dL/dZ_T for the last
  segment and RF(t, T) * dL/dmem_{t+1} otherwise. The replay runs the segment forward
  keeping only each block's input, then backpropagates block by block, recomputing one
  block at a time: it holds one layer's activations, not all of them.

With `skip_pad_id` set, a segment t >= 2 whose tokens are all that id is skipped per
example: the memory passes it unchanged (no RF) and the output stays the last real
segment's Z. Every segment still runs for the batch; `jnp.where` selects per example.

All three call the same pure `step` with the same per-segment dropout key
fold_in(key, t), so they compute the same function and the same gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rmaat_jax.models.encoder import SegmentLayers, Weights, unstack_blocks

Array = jax.Array
BACKPROP_MODES = ("bptt", "remat", "amrb")


def _tree_add(a, b):
  return jax.tree_util.tree_map(jnp.add, a, b)


def _skipped(tokens: Array, t: Array, skip_pad_id: int | None) -> Array | None:
  """[B, 1, 1] True where segment t is all padding and not the first, else None (no skip)."""
  if skip_pad_id is None:
    return None
  empty = jnp.all(tokens == skip_pad_id, axis=1) & (t > 0)
  return empty[:, None, None]


def _carry_memory(z: Array, rf_t: Array, rfb_t: Array | None, num_memory: int) -> Array:
  """RF(t) * Z_t[:, :M], whose gradient is scaled by rfb_t instead when that is given."""
  mem = z[:, :num_memory]
  if rfb_t is None:
    return rf_t * mem
  return rfb_t * mem + lax.stop_gradient((rf_t - rfb_t) * mem)


def _scan_segments(step: SegmentLayers, weights: Weights, mem0: Array, segments: Array,
                   rf: np.ndarray, key: Array, num_memory: int,
                   skip_pad_id: int | None, reset_memory: bool = False,
                   rf_backward: np.ndarray | None = None) -> tuple[Array, Array]:
  """One loop over all T segments; returns Z_T and the memories entering each segment.

  The last segment runs inside the loop too: a loop of trip count 1 (T = 2 with the
  last segment outside) would be inlined by XLA, which may then merge a replay or a
  rematerialisation with the forward computation and keep that segment's activations
  alive, i.e. BPTT's footprint.
  """

  def body(carry, xs):
    mem, z_prev = carry
    t, tokens, rf_t, rfb_t = xs
    z = step(weights, mem, tokens, jax.random.fold_in(key, t))
    # rf[T-1] scales a memory that no segment reads; it keeps the loop uniform.
    mem_next = (mem0 if reset_memory
                else _carry_memory(z, rf_t, rfb_t, num_memory).astype(mem.dtype))
    skipped = _skipped(tokens, t, skip_pad_id)
    if skipped is not None:
      mem_next, z = jnp.where(skipped, mem, mem_next), jnp.where(skipped, z_prev, z)
    return (mem_next, z), mem

  z_spec = jax.eval_shape(step, weights, mem0, segments[0], key)
  xs = (jnp.arange(segments.shape[0]), segments, jnp.asarray(rf, mem0.dtype),
        None if rf_backward is None else jnp.asarray(rf_backward, mem0.dtype))
  (_, z_last), memories = lax.scan(body, (mem0, jnp.zeros(z_spec.shape, z_spec.dtype)), xs)
  return z_last, memories


def replay_segment(step: SegmentLayers, weights: Weights, mem: Array, tokens: Array,
                   key: Array, dz: Array, dweights: Weights) -> tuple[Weights, Array]:
  """Backpropagates dz = dL/dZ through one segment Z = step(weights, mem, tokens, key) one
  block at a time: returns (dweights + dL/dweights, dL/dmem). The sums' block gradients,
  dweights["blocks"], are one tree stacked over layers (a leading [L] axis).

  A loop over blocks 0..L-2 replays the forward keeping only each block's input
  ([L, B, N, d]); a reverse loop then recomputes block l under `jax.vjp`, backpropagates it
  and adds its weight gradient into layer l of the sums in place, so one block's
  activations are live at a time and no per-segment copy of the gradients exists. The loops
  pick layer l's weights with `lax.switch` (`SegmentLayers.block_of`), so the weights are
  not copied into a stacked array either. Loops rather than optimisation barriers: XLA's CPU
  compiler drops barriers before scheduling, and would merge the recomputation with the
  first replay. Costs one extra forward of blocks 0..L-2.
  """
  blocks = weights["blocks"]
  num_layers = len(blocks)
  _, inputs = step.scan_blocks(blocks, step.embed(weights["embed"], mem, tokens), tokens, key,
                               num_layers - 1)

  def block_vjp(layer: int, dx: Array, x: Array):
    run_block = lambda b, x: step.block(b, x, tokens, jax.random.fold_in(key, layer))  # noqa: E731
    return jax.vjp(run_block, blocks[layer], x)[1](dx.astype(x.dtype))

  # One branch per layer, so that no stacked copy of the weights is made (as block_of).
  branches = [functools.partial(block_vjp, i) for i in range(num_layers)]

  def backward(carry, xs):
    dx, sums = carry
    layer, x = xs
    dblock, dx = lax.switch(layer, branches, dx, x)
    sums = jax.tree_util.tree_map(lambda s, d: s.at[layer].add(d), sums, dblock)
    return (dx, sums), None

  (dx, dblocks), _ = lax.scan(backward, (dz, dweights["blocks"]),
                              (jnp.arange(num_layers), inputs), reverse=True)
  _, embed_vjp = jax.vjp(lambda w, m: step.embed(w, m, tokens), weights["embed"], mem)
  dembed, dmem = embed_vjp(dx)
  return {"embed": _tree_add(dweights["embed"], dembed), "blocks": dblocks}, dmem


def make_amrb(step: SegmentLayers, rf: np.ndarray, num_memory: int,
              skip_pad_id: int | None = None, replay: str = "block",
              reset_memory: bool = False, rf_backward: np.ndarray | None = None):
  """Returns f(weights, mem0, segments, key) -> Z_T with AMRB's replay backward.

  `replay`: "block" replays a segment block by block (`replay_segment`: one layer's
  activations live); "segment" replays it under one `jax.vjp` (the paper's replay: every
  layer's activations of the segment live, one forward fewer). `reset_memory`: every
  segment reads mem0 (see the module docstring); dL/dmem0 is then the sum over segments.
  `rf_backward`: the factors the replay scales dL/dmem_{t+1} by (default: `rf`, exact)."""
  # float64 constants, cast to the memory's dtype where used (float32, or float64 in x64).
  rf_all = np.asarray(rf, np.float64)
  rf_seed = rf_all if rf_backward is None else np.asarray(rf_backward, np.float64)

  def forward_scan(weights, mem0, segments, key):
    return _scan_segments(step, weights, mem0, segments, rf_all, key, num_memory,
                          skip_pad_id, reset_memory)

  @jax.custom_vjp
  def run(weights, mem0, segments, key):
    return forward_scan(weights, mem0, segments, key)[0]

  def forward(weights, mem0, segments, key):
    # Only the memories entering each segment are kept (the replay buffer [T, B, M, d]).
    z_last, memories = forward_scan(weights, mem0, segments, key)
    return z_last, (weights, memories, segments, key)

  def replay_backward(residuals, dz_last):
    weights, memories, segments, key = residuals
    num_layers = len(weights["blocks"])

    def body(carry, xs):
      dweights_acc, dmem_next, dz_next = carry
      t, tokens, mem_t, rf_t = xs
      # Make the replay of segment t wait for dL/dmem_{t+1}, so that XLA cannot schedule
      # it early and hold two segments' activations at once. (XLA's GPU compiler honours
      # this when it schedules; its CPU compiler drops barriers before, and there the loop
      # alone orders the segments: docs/method.md section 5.)
      mem_t, dmem_next, dz_next = lax.optimization_barrier((mem_t, dmem_next, dz_next))
      # Z_t feeds mem_{t+1} = RF(t, T) * Z_t[:, :M] and, if no later segment ran, the
      # output: dZ_t = dL/dZ_T carried so far + RF(t, T) * dL/dmem_{t+1} on the memory rows.
      # With reset_memory no later segment reads Z_t, and dmem_next sums dL/dmem0 instead.
      seed = dz_next if reset_memory else dz_next.at[:, :num_memory].add(
          (rf_t * dmem_next).astype(dz_next.dtype))
      skipped = _skipped(tokens, t, skip_pad_id)
      if skipped is not None:
        seed = jnp.where(skipped, 0, seed)
      key_t = jax.random.fold_in(key, t)
      if replay == "block":
        dweights, dmem_t = replay_segment(step, weights, mem_t, tokens, key_t, seed,
                                          dweights_acc)
      else:
        _, vjp_t = jax.vjp(lambda w, m: step(w, m, tokens, key_t), weights, mem_t)
        dweights_t, dmem_t = vjp_t(seed)
        dweights = _tree_add(dweights_acc, dweights_t)
      dz = jnp.zeros_like(dz_next)
      if skipped is not None:  # a skipped segment passes both cotangents through
        dmem_t = jnp.where(skipped, 0 if reset_memory else dmem_next, dmem_t)
        dz = jnp.where(skipped, dz_next, dz)
      if reset_memory:  # every segment read mem0
        dmem_t = dmem_next + dmem_t
      return (dweights, dmem_t, dz), None

    if replay == "block":  # the block replay sums block gradients stacked over layers
      block_sums = jax.tree_util.tree_map(
          lambda a: jnp.zeros((num_layers,) + a.shape, a.dtype), weights["blocks"][0])
    else:
      block_sums = jax.tree_util.tree_map(jnp.zeros_like, weights["blocks"])
    sums = {"embed": jax.tree_util.tree_map(jnp.zeros_like, weights["embed"]),
            "blocks": block_sums}
    init = (sums, jnp.zeros_like(memories[0]), dz_last)
    xs = (jnp.arange(segments.shape[0]), segments, memories,
          jnp.asarray(rf_seed, memories.dtype))
    (dweights, dmem0, _), _ = lax.scan(body, init, xs, reverse=True)
    if replay == "block":
      dweights = {"embed": dweights["embed"],
                  "blocks": unstack_blocks(dweights["blocks"], num_layers)}
    # Integer tokens and the dropout key have no cotangent.
    return dweights, dmem0, None, None

  run.defvjp(forward, replay_backward)
  return run


def run_segments(step: SegmentLayers, weights: Weights, mem0: Array, segments: Array,
                 rf: np.ndarray, key: Array, *, backprop: str, num_memory: int,
                 skip_pad_id: int | None = None, amrb_replay: str = "block",
                 reset_memory: bool = False, rf_backward: np.ndarray | None = None) -> Array:
  """Z_T of the recurrence over `segments` [T, B, S] starting from `mem0` [B, M, d].

  `rf` holds the T retention factors (numpy constants, no gradient); `key` is the step's
  dropout key, folded with the segment index inside. `skip_pad_id`: skip segments made
  only of this id (None: run every segment). `amrb_replay`: see `make_amrb`.
  `reset_memory`: every segment starts from `mem0` (`rf` is then unused). `rf_backward`:
  a diagnostic; the backward scales dL/dmem_{t+1} by these factors instead of `rf`.
  """
  for name, factors in (("retention", rf), ("backward retention", rf_backward)):
    if factors is not None and segments.shape[0] != len(factors):
      raise ValueError(f"{segments.shape[0]} segments but {len(factors)} {name} factors")
  if backprop in ("bptt", "remat"):
    segment_step = step if backprop == "bptt" else jax.checkpoint(
        step, policy=jax.checkpoint_policies.nothing_saveable)
    return _scan_segments(segment_step, weights, mem0, segments, rf, key, num_memory,
                          skip_pad_id, reset_memory, rf_backward)[0]
  if backprop == "amrb":
    return make_amrb(step, rf, num_memory, skip_pad_id, amrb_replay, reset_memory,
                     rf_backward)(weights, mem0, segments, key)
  raise ValueError(f"unknown backprop mode {backprop!r}; use one of {BACKPROP_MODES}")
