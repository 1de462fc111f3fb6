"""One segment through the encoder: embed, prepend memory, run the blocks.

The per-segment computation is the pure function `SegmentLayers` (embedding included), so
that the recurrence and AMRB's replay only ever need the integer tokens of a segment and
the memory entering it: nothing stored grows with the sequence length. It is exposed layer
by layer (`embed`, `block`) because AMRB's replay backpropagates one block at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from rmaat_jax.models.attention import EncoderBlock
from rmaat_jax.models.config import ModelConfig

Array = jax.Array
# {"embed": {"token_embedding", "position_embedding"},
#  "blocks": one BlockWeights per layer (a tuple)}
Weights = dict[str, Any]
# One block's weights: {"params": ..., "r": R [H, N, m] or None}. AMRB's block replay sums
# their gradients in one tree stacked over layers (a leading [L] axis on every leaf).
BlockWeights = dict[str, Any]


def token_mask(tokens: Array, pad_id: int) -> Array | None:
  """True for real tokens; None when the task has no padding id (pad_id = -1)."""
  return None if pad_id < 0 else tokens != pad_id


def cast_floats(tree: Any, dtype: Any) -> Any:
  """Casts the floating leaves of a pytree (integer leaves are left alone)."""
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _block_module(cfg: ModelConfig) -> EncoderBlock:
  return EncoderBlock(cfg.num_heads, cfg.mlp_dim, cfg.dropout_rate, cfg.attention, cfg.alpha,
                      cfg.hebbian_sigmoid, cfg.block_layout)


def _embedding_module(cfg: ModelConfig) -> nn.Embed:
  return nn.Embed(cfg.vocab_size, cfg.emb_dim)


def _segment_mask(tokens: Array, num_memory: int, pad_id: int) -> Array | None:
  """[B, M + S]: memory slots are always real; None when the task has no padding id."""
  mask = token_mask(tokens, pad_id)
  if mask is None:
    return None
  return jnp.concatenate([jnp.ones((tokens.shape[0], num_memory), bool), mask], axis=1)


def segment_weights(encoder_params: dict[str, Any],
                    rs: tuple[Array, ...] | None) -> Weights:
  """The segment step's weights from the encoder's parameters ({"token_embedding",
  "position_embedding", "block_0", ...}) and R per layer (None without astro attention)."""
  num_layers = sum(name.startswith("block_") for name in encoder_params)
  return {
      "embed": {name: encoder_params[name]
                for name in ("token_embedding", "position_embedding")},
      "blocks": tuple({"params": encoder_params[f"block_{layer}"],
                       "r": None if rs is None else rs[layer]} for layer in range(num_layers)),
  }


def unstack_blocks(stacked: BlockWeights, num_layers: int) -> tuple[BlockWeights, ...]:
  """Per-layer trees from one whose leaves have a leading [L] axis."""
  return tuple(jax.tree_util.tree_map(lambda a, i=layer: a[i], stacked)
               for layer in range(num_layers))


@dataclasses.dataclass(frozen=True)
class SegmentLayers:
  """Z_t = blocks(concat(mem_t, embed(x_t) + pos_emb)) for one segment, as pure functions.

  `weights` (see `segment_weights`) are float32. Each function casts what it reads to the
  compute `dtype`, so each segment's weight gradients come back as float32 and their sum
  over segments (the scan's in BPTT, the replay's in AMRB) accumulates in float32 even when
  the segment computes in bfloat16. Block l draws its dropout masks from fold_in(key, l),
  so a replay that runs the blocks separately (AMRB's) redraws the same masks.
  """

  cfg: ModelConfig
  train: bool
  dtype: Any = jnp.float32

  def embed(self, embed_weights: dict[str, Any], mem: Array, tokens: Array) -> Array:
    """The block input [B, M + S, d]: memory, then token + learned position embeddings
    (positions of the S segment slots, shared by all segments; memory tokens get none)."""
    params = cast_floats(embed_weights, self.dtype)
    emb = _embedding_module(self.cfg).apply({"params": params["token_embedding"]}, tokens)
    return jnp.concatenate([mem.astype(self.dtype), emb + params["position_embedding"]],
                           axis=1)

  def block(self, block_weights: BlockWeights, x: Array, tokens: Array, key: Array) -> Array:
    """One encoder block on x [B, M + S, d]; `key` is the block's own dropout key."""
    cfg = self.cfg
    block_weights = cast_floats(block_weights, self.dtype)
    return _block_module(cfg).apply(
        {"params": block_weights["params"]}, x,
        _segment_mask(tokens, cfg.num_memory_tokens, cfg.pad_id), block_weights["r"],
        deterministic=not self.train,
        rngs={"dropout": key} if self.train and cfg.dropout_rate > 0 else None)

  def block_of(self, blocks: tuple[BlockWeights, ...], layer: Array, x: Array, tokens: Array,
               key: Array) -> Array:
    """Block `layer` (a traced index) of the per-layer `blocks` on x, as a `lax.switch` over
    the layers: no stacked copy of the weights is made."""
    branches = [lambda x, i=i: self.block(blocks[i], x, tokens, jax.random.fold_in(key, i))
                for i in range(len(blocks))]
    return lax.switch(layer, branches, x)

  def scan_blocks(self, blocks: tuple[BlockWeights, ...], x: Array, tokens: Array, key: Array,
                  num_blocks: int) -> tuple[Array, Array]:
    """Runs blocks 0..num_blocks-1 in order on x as a loop; returns the last output and
    each block's input [num_blocks + 1, B, N, d], the last one that output (AMRB's replay)."""

    def body(carry, layer):
      x, inputs = carry
      return (self.block_of(blocks, layer, x, tokens, key), inputs.at[layer].set(x)), None

    inputs = jnp.zeros((num_blocks + 1,) + x.shape, x.dtype)
    (x, inputs), _ = lax.scan(body, (x, inputs), jnp.arange(num_blocks))
    return x, inputs.at[num_blocks].set(x)

  def __call__(self, weights: Weights, mem: Array, tokens: Array, key: Array) -> Array:
    """(weights, mem [B, M, d], tokens [B, S], dropout key) -> Z [B, M + S, d].

    Unrolled over layers: autodiff through a loop over layers (BPTT's) kept a larger
    constant (292 vs 232 MiB of temporaries on the Text config at 2 segments)."""
    x = self.embed(weights["embed"], mem, tokens)
    for layer, block_weights in enumerate(weights["blocks"]):
      x = self.block(block_weights, x, tokens, jax.random.fold_in(key, layer))
    return x


def init_segment_encoder(cfg: ModelConfig, key: Array,
                         rs: tuple[Array, ...] | None) -> dict[str, Any]:
  """The encoder's parameters ({"token_embedding", "position_embedding", "block_0", ...};
  shapes do not depend on the batch). `segment_weights` arranges them for `SegmentLayers`."""
  keys = jax.random.split(key, cfg.num_layers + 2)
  tokens = jnp.zeros((1, cfg.segment_len), jnp.int32)
  x = jnp.zeros((1, cfg.tokens_per_segment, cfg.emb_dim), jnp.float32)
  mask = _segment_mask(tokens, cfg.num_memory_tokens, cfg.pad_id)
  params = {
      "token_embedding": _embedding_module(cfg).init(keys[0], tokens)["params"],
      "position_embedding": nn.initializers.normal(0.02)(
          keys[1], (cfg.segment_len, cfg.emb_dim), jnp.float32),
  }
  for layer in range(cfg.num_layers):
    params[f"block_{layer}"] = _block_module(cfg).init(
        keys[layer + 2], x, mask, None if rs is None else rs[layer],
        deterministic=True)["params"]
  return params
