"""One segment through the encoder: embed, prepend memory, run the blocks.

`SegmentEncoder` is the whole per-segment computation, embedding included, so that the
recurrence (and AMRB's replay) only ever needs the integer tokens of a segment and the
memory entering it: nothing stored grows with the sequence length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rmaat_jax.models.attention import EncoderBlock
from rmaat_jax.models.config import ModelConfig

Array = jax.Array
Weights = dict[str, Any]
# (weights, mem [B, M, d], tokens [B, S], dropout key) -> Z [B, M + S, d]
SegmentStep = Callable[[Weights, Array, Array, Array], Array]


def token_mask(tokens: Array, pad_id: int) -> Array | None:
  """True for real tokens; None when the task has no padding id (pad_id = -1)."""
  return None if pad_id < 0 else tokens != pad_id


class SegmentEncoder(nn.Module):
  """Z_t = encoder(concat(mem_t, embed(x_t) + pos_emb)) for one segment."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, mem: Array, tokens: Array, rs: tuple[Array, ...] | None, *,
               train: bool) -> Array:
    cfg = self.cfg
    emb = nn.Embed(cfg.vocab_size, cfg.emb_dim, name="token_embedding")(tokens)
    # Learned absolute positions of the S segment slots, shared by all segments; memory
    # tokens get none.
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (cfg.segment_len, cfg.emb_dim))
    x = jnp.concatenate([mem.astype(emb.dtype), emb + pos], axis=1)
    mask = token_mask(tokens, cfg.pad_id)
    if mask is not None:
      mask = jnp.concatenate([jnp.ones(mem.shape[:2], bool), mask], axis=1)
    for layer in range(cfg.num_layers):
      x = EncoderBlock(cfg.num_heads, cfg.mlp_dim, cfg.dropout_rate, cfg.attention,
                       cfg.alpha, cfg.hebbian_sigmoid, name=f"block_{layer}")(
                           x, mask, None if rs is None else rs[layer],
                           deterministic=not train)
    return x


def init_segment_encoder(cfg: ModelConfig, key: Array,
                         rs: tuple[Array, ...] | None) -> Weights:
  """Parameters of `SegmentEncoder` (shapes do not depend on the batch)."""
  mem = jnp.zeros((1, cfg.num_memory_tokens, cfg.emb_dim), jnp.float32)
  tokens = jnp.zeros((1, cfg.segment_len), jnp.int32)
  return SegmentEncoder(cfg).init({"params": key}, mem, tokens, rs, train=False)["params"]


def cast_floats(tree: Any, dtype: Any) -> Any:
  """Casts the floating leaves of a pytree (integer leaves are left alone)."""
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_segment_step(cfg: ModelConfig, train: bool, dtype: Any = jnp.float32) -> SegmentStep:
  """The pure per-segment function that the scan (and AMRB's replay) calls.

  weights = {"encoder": SegmentEncoder params, "positions": R per layer or None}, float32.
  They are cast to the compute `dtype` inside the step, so each segment's weight gradients
  come back as float32 and the sum over segments (the scan's in BPTT, the replay's in
  AMRB) accumulates in float32 even when the segment computes in bfloat16.
  """
  module = SegmentEncoder(cfg)

  def step(weights: Weights, mem: Array, tokens: Array, key: Array) -> Array:
    rngs = {"dropout": key} if train and cfg.dropout_rate > 0 else None
    weights = cast_floats(weights, dtype)
    return module.apply({"params": weights["encoder"]}, mem.astype(dtype), tokens,
                        weights["positions"], train=train, rngs=rngs)

  return step
