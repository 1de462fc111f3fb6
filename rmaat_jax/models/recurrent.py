"""The recurrence over segments and its three backprop modes (METHOD.md sections 1 and 5).

    mem_{t+1} = RF(t, T) * Z_t[:, :M]   for t = 1..T-1,     output Z_T

- "bptt":  plain `lax.scan`; autodiff stores every segment's activations.
- "remat": the segment step under `jax.checkpoint(policy=nothing_saveable)`.
- "amrb":  an explicit `jax.custom_vjp`. The forward keeps only the memories entering
  each segment (the replay buffer, [T, B, M, d]); the backward is a reverse scan that
  replays segment t from (weights, mem_t, tokens_t) under `jax.vjp`, seeded with dL/dZ_T
  for the last segment and RF(t, T) * dL/dmem_{t+1} otherwise.

All three call the same pure `step` with the same per-segment dropout key
fold_in(key, t), so they compute the same function and the same gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rmaat_jax.models.encoder import SegmentStep, Weights

Array = jax.Array
BACKPROP_MODES = ("bptt", "remat", "amrb")


def _tree_add(a, b):
  return jax.tree_util.tree_map(jnp.add, a, b)


def _forward_scan(step: SegmentStep, weights: Weights, mem0: Array, segments: Array,
                  rf: np.ndarray, key: Array, num_memory: int, keep_memories: bool):
  """Runs segments 1..T-1; returns the memory entering T and optionally all memories."""
  num_segments = segments.shape[0]

  def body(mem, xs):
    t, tokens, rf_t = xs
    z = step(weights, mem, tokens, jax.random.fold_in(key, t))
    return (rf_t * z[:, :num_memory]).astype(mem.dtype), (mem if keep_memories else None)

  xs = (jnp.arange(num_segments - 1), segments[:-1], jnp.asarray(rf[:-1], mem0.dtype))
  return lax.scan(body, mem0, xs)


def _last_key(key: Array, num_segments: int) -> Array:
  return jax.random.fold_in(key, num_segments - 1)


def _scan_autodiff(step: SegmentStep, weights: Weights, mem0: Array, segments: Array,
                   rf: np.ndarray, key: Array, num_memory: int) -> Array:
  mem_last, _ = _forward_scan(step, weights, mem0, segments, rf, key, num_memory, False)
  return step(weights, mem_last, segments[-1], _last_key(key, segments.shape[0]))


def make_amrb(step: SegmentStep, rf: np.ndarray, num_memory: int):
  """Returns f(weights, mem0, segments, key) -> Z_T with AMRB's replay backward."""
  rf_all = np.asarray(rf, np.float32)

  @jax.custom_vjp
  def run(weights, mem0, segments, key):
    return _scan_autodiff(step, weights, mem0, segments, rf_all, key, num_memory)

  def forward(weights, mem0, segments, key):
    mem_last, memories = _forward_scan(step, weights, mem0, segments, rf_all, key,
                                       num_memory, keep_memories=True)
    z_last = step(weights, mem_last, segments[-1], _last_key(key, segments.shape[0]))
    # Replay buffer: mem_1..mem_T; the activations of each segment are not kept.
    memories = jnp.concatenate([memories, mem_last[None]], axis=0)
    return z_last, (weights, memories, segments, key)

  def replay_backward(residuals, dz_last):
    weights, memories, segments, key = residuals
    num_segments = segments.shape[0]
    _, vjp_last = jax.vjp(
        lambda w, m: step(w, m, segments[-1], _last_key(key, num_segments)),
        weights, memories[-1])
    dweights, dmem = vjp_last(dz_last)

    def body(carry, xs):
      dweights_acc, dmem_next = carry
      t, tokens, mem_t, rf_t = xs
      key_t = jax.random.fold_in(key, t)
      # mem_{t+1} = RF(t, T) * Z_t[:, :M]: the seed is RF(t, T) * dL/dmem_{t+1}.
      segment = lambda w, m: rf_t * step(w, m, tokens, key_t)[:, :num_memory]  # noqa: E731
      _, vjp_t = jax.vjp(segment, weights, mem_t)
      dweights_t, dmem_t = vjp_t(dmem_next.astype(mem_t.dtype))
      return (_tree_add(dweights_acc, dweights_t), dmem_t), None

    xs = (jnp.arange(num_segments - 1), segments[:-1], memories[:-1],
          jnp.asarray(rf_all[:-1], memories.dtype))
    (dweights, dmem0), _ = lax.scan(body, (dweights, dmem), xs, reverse=True)
    # Integer tokens and the dropout key have no cotangent.
    return dweights, dmem0, None, None

  run.defvjp(forward, replay_backward)
  return run


def run_segments(step: SegmentStep, weights: Weights, mem0: Array, segments: Array,
                 rf: np.ndarray, key: Array, *, backprop: str, num_memory: int) -> Array:
  """Z_T of the recurrence over `segments` [T, B, S] starting from `mem0` [B, M, d].

  `rf` holds the T retention factors (numpy constants, no gradient); `key` is the step's
  dropout key, folded with the segment index inside.
  """
  if segments.shape[0] != len(rf):
    raise ValueError(f"{segments.shape[0]} segments but {len(rf)} retention factors")
  if backprop == "bptt":
    return _scan_autodiff(step, weights, mem0, segments, rf, key, num_memory)
  if backprop == "remat":
    remat_step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
    return _scan_autodiff(remat_step, weights, mem0, segments, rf, key, num_memory)
  if backprop == "amrb":
    return make_amrb(step, rf, num_memory)(weights, mem0, segments, key)
  raise ValueError(f"unknown backprop mode {backprop!r}; use one of {BACKPROP_MODES}")
