"""The recurrent memory classifier (docs/method.md section 1), single or dual encoder.

tokens [B, L] -> T segments of S tokens -> recurrence over segments (recurrent.py) ->
pool(Z_T) -> head -> logits [B, num_classes]. With `dual_encoder` the input is
[B, 2, L]; both documents go through the same recurrent encoder (stacked on the batch
axis) and the pooled u, v are combined as [u, v, u * v, u - v] (LRA's convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rmaat_jax.models.config import ModelConfig
from rmaat_jax.models.encoder import (
  SegmentLayers,
  init_segment_encoder,
  segment_weights,
  token_mask,
)
from rmaat_jax.models.position import AstroPositions
from rmaat_jax.models.recurrent import run_segments
from rmaat_jax.models.retention import retention_factors

Array = jax.Array


def split_segments(tokens: Array, num_segments: int) -> Array:
  """[B, T * S] -> [T, B, S] (segment-major, the scan's leading axis)."""
  batch, length = tokens.shape
  return tokens.reshape(batch, num_segments, length // num_segments).swapaxes(0, 1)


def last_real_tokens(segments: Array, pad_id: int) -> Array:
  """Tokens [B, S] of each example's last segment holding a real token (the first segment
  if none does): the segment whose Z is the output when empty segments are skipped."""
  segments = jnp.asarray(segments)
  real = jnp.any(segments != pad_id, axis=2).at[0].set(True)  # [T, B]
  last = segments.shape[0] - 1 - jnp.argmax(real[::-1], axis=0)
  return segments[last, jnp.arange(segments.shape[1])]


def pool(z: Array, cfg: ModelConfig, last_tokens: Array) -> Array:
  """Z_T [B, M + S, d] -> [B, d].

  "memory": mean of the M memory outputs. "mean" [decision]: mean over every real
  position of Z_T, memory tokens included, so it stays defined when the last segment is
  all padding.
  """
  if cfg.pool == "memory":
    return jnp.mean(z[:, :cfg.num_memory_tokens], axis=1)
  mask = token_mask(last_tokens, cfg.pad_id)
  if mask is None:
    return jnp.mean(z, axis=1)
  mask = jnp.concatenate(
      [jnp.ones((z.shape[0], cfg.num_memory_tokens), bool), mask], axis=1)
  weights = mask.astype(z.dtype)[..., None]
  return jnp.sum(z * weights, axis=1) / jnp.sum(weights, axis=1)


def memory_factors(cfg: ModelConfig) -> np.ndarray:
  """The T factors that scale the memory leaving each segment: RF(t, T) of
  `model.retention` (retention.py), or zeros for "reset", where every segment reads the
  learned initial memory instead (the control in which nothing crosses a segment)."""
  if cfg.retention == "reset":
    return np.zeros(cfg.num_segments)
  return retention_factors(cfg.num_segments, cfg.retention)


def dropout_key(key: Array, rng: str = "auto") -> Array:
  """The segments' dropout key, drawn from `key`; `rng` is `model.dropout_rng`.

  Threefry, JAX's default, materialises intermediate uint32 arrays of a mask's size (with
  flax's dropout they were most of AMRB's temporary memory, 8 MiB per layer on the Text
  config at batch 2); "rbg" (XLA's RngBitGenerator) writes the bits once. On CPU
  RngBitGenerator is the slower one (a Text step's masks: 144 vs 65 ms on one core with
  models/dropout.py), so "auto" keeps threefry there. Either way the masks are a function
  of the step's key, folded per segment.
  """
  if rng == "auto":
    rng = "threefry" if jax.default_backend() == "cpu" else "rbg"
  if rng == "threefry":
    return key
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=rng)


class RMAATClassifier(nn.Module):
  """Recurrent Memory Augmented Astromorphic Transformer for sequence classification."""

  cfg: ModelConfig
  # Compute dtype of the segment encoder (parameters stay float32; see SegmentLayers).
  dtype: Any = jnp.float32

  def _check_tokens(self, tokens: Array) -> None:
    cfg = self.cfg
    expected = (2, cfg.seq_len) if cfg.dual_encoder else (cfg.seq_len,)
    if tokens.ndim != len(expected) + 1 or tuple(tokens.shape[1:]) != expected:
      shape = "[B, 2, seq_len]" if cfg.dual_encoder else "[B, seq_len]"
      raise ValueError(
          f"tokens have shape {tuple(tokens.shape)}; the model expects {shape} = "
          f"[B, {', '.join(map(str, expected))}] (model.seq_len={cfg.seq_len}, "
          f"model.dual_encoder={cfg.dual_encoder})")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if isinstance(tokens, jax.core.Tracer) or tokens.size == 0:
      return  # under jit the values are unknown; the input pipeline checks them instead
    values = np.asarray(tokens)  # numpy: also right for a concrete array inside a jit trace
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= cfg.vocab_size:
      bad = low if low < 0 else high
      raise ValueError(f"token id {bad} is outside the vocabulary [0, model.vocab_size="
                       f"{cfg.vocab_size}); an embedding lookup would silently read "
                       "out of range")

  @nn.compact
  def __call__(self, tokens: Array, *, train: bool = False) -> Array:
    cfg = self.cfg
    self._check_tokens(tokens)
    if cfg.dual_encoder:
      batch = tokens.shape[0]
      tokens = tokens.reshape(2 * batch, cfg.seq_len)  # [u_1, v_1, u_2, v_2, ...]

    rs = None
    if cfg.attention == "astro":
      rs = AstroPositions(cfg.num_layers, cfg.num_heads, cfg.tokens_per_segment,
                          cfg.head_dim, cfg.position, cfg.position_scale,
                          name="astro_positions")()
    encoder_params = self.param("segment_encoder",
                                lambda key: init_segment_encoder(cfg, key, rs))
    # At the scale of the token inputs: the embedding's default init gives each token a
    # norm of ~1 (std 1 / sqrt(d) per entry); a memory 50x smaller would start ignored.
    memory_init = self.param("memory_init", nn.initializers.normal(cfg.emb_dim ** -0.5),
                             (cfg.num_memory_tokens, cfg.emb_dim))
    mem0 = jnp.broadcast_to(memory_init, (tokens.shape[0],) + memory_init.shape)
    key = (dropout_key(self.make_rng("dropout"), cfg.dropout_rng) if train and cfg.dropout_rate > 0
           else jax.random.key(0))

    segments = split_segments(tokens, cfg.num_segments)
    skip_pad_id = cfg.pad_id if cfg.skip_empty_segments and cfg.pad_id >= 0 else None
    z_last = run_segments(
        SegmentLayers(cfg, train, self.dtype), segment_weights(encoder_params, rs),
        mem0, segments, memory_factors(cfg), key,
        backprop=cfg.backprop, num_memory=cfg.num_memory_tokens, skip_pad_id=skip_pad_id,
        amrb_replay=cfg.amrb_replay, reset_memory=cfg.retention == "reset",
        rf_backward=(None if cfg.retention_backward == "exact"
                     else retention_factors(cfg.num_segments, cfg.retention_backward)))
    last_tokens = (segments[-1] if skip_pad_id is None
                   else last_real_tokens(segments, skip_pad_id))
    pooled = nn.LayerNorm(name="pool_norm")(
        pool(z_last.astype(jnp.promote_types(z_last.dtype, jnp.float32)), cfg, last_tokens))

    if cfg.dual_encoder:
      u, v = pooled[0::2], pooled[1::2]
      pooled = jnp.concatenate([u, v, u * v, u - v], axis=-1)
    # Head [decision]: LayerNorm -> Dense(d) -> GELU -> Dense(num_classes).
    hidden = nn.gelu(nn.Dense(cfg.emb_dim, name="head_hidden")(pooled))
    return nn.Dense(cfg.num_classes, name="head_out")(hidden)


def build_model(model_config: Mapping[str, Any] | ModelConfig,
                dtype: Any = jnp.float32) -> RMAATClassifier:
  """Validates `config.model` (ConfigError names the bad field) and builds the module.

  `model.init({"params": key}, tokens, train=False)` and
  `model.apply(variables, tokens, train=True, rngs={"dropout": key})` give logits
  [B, num_classes]; tokens are int32 [B, seq_len] ([B, 2, seq_len] with dual_encoder).
  `dtype` is the segment encoder's compute dtype (e.g. jnp.bfloat16); parameters, their
  gradients and the logits stay float32.
  """
  cfg = (model_config if isinstance(model_config, ModelConfig)
         else ModelConfig.from_config(model_config))
  return RMAATClassifier(cfg, dtype)
