"""Attention for one segment: astromorphic (STP) linear attention and the two baselines.

Functional cores (pure, batched over [B, H, N, .]) plus the multi-head Flax module and the
encoder block (post-LN or pre-LN). The astro core follows docs/method.md section 2:

  out_i = sum_t [phi(q_i).phi(k_t) + phi(q_i).phi(r_t)] v_t
          / (m * phi(q_i) . (sum_t phi(k_t)) ** alpha)

computed as write mode (H = phi(K)^T V / m + phi(R)^T V / m, g = (sum phi(K)) ** alpha)
followed by read mode, so nothing grows with N x N.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rmaat_jax.models.dropout import Dropout
from rmaat_jax.models.layers import Dense, LayerNorm, elu_plus_one, gelu
from rmaat_jax.models.position import distance_positions, projected_positions

Array = jax.Array

__all__ = [
    "astro_attention", "linear_attention", "softmax_attention", "phi",
    "distance_positions", "projected_positions", "MultiHeadAttention", "EncoderBlock",
]


def phi(x: Array) -> Array:
  """Feature map elu(x) + 1: strictly positive, so every normaliser is > 0 (its backward
  pass keeps only its output: layers.elu_plus_one)."""
  return elu_plus_one(x)


def _mask_keys(features: Array, key_mask: Array | None) -> Array:
  """Zeroes key-side rows [B, H, N, .] of padded tokens (key_mask [B, N], True = real)."""
  if key_mask is None:
    return features
  return features * key_mask[:, None, :, None].astype(features.dtype)


def _zero_padded_queries(out: Array, key_mask: Array | None) -> Array:
  if key_mask is None:
    return out
  return jnp.where(key_mask[:, None, :, None], out, 0.0)


def _safe_divide(num: Array, den: Array) -> Array:
  # den == 0 only when a row has no real key at all; its output is defined as 0.
  return num / jnp.where(den == 0, 1.0, den)[..., None]


def _safe_power(s: Array, alpha: float) -> Array:
  """s ** alpha for s >= 0 with a zero (not NaN) gradient at s = 0, where d/ds s ** alpha
  is infinite: a row whose keys are all masked has s = 0 and must not poison the keys'
  gradients (0 * inf)."""
  positive = s > 0
  return jnp.where(positive, jnp.where(positive, s, 1.0) ** alpha, 0.0)


def astro_attention(q: Array, k: Array, v: Array, r: Array, *, alpha: float = 0.25,
                    key_mask: Array | None = None,
                    hebbian_sigmoid: bool = False) -> Array:
  """Astromorphic attention, linear in N.

  Args:
    q, k: [B, H, N, m] queries and keys (raw, before phi).
    v: [B, H, N, d_h] values.
    r: [H, N, m] positional matrix R (raw, before phi); content-independent.
    alpha: exponent of the astrocytic normaliser g = (sum_t phi(k_t)) ** alpha.
    key_mask: [B, N] bool, True for real tokens; padded tokens contribute to no sum and
      their output rows are 0.
    hebbian_sigmoid: apply a sigmoid to the Hebbian state H (paper option, default off).

  Returns:
    [B, H, N, d_h].
  """
  m = q.shape[-1]
  phi_k = _mask_keys(phi(k), key_mask)
  v = _mask_keys(v, key_mask)  # removes padded tokens from the phi(R)^T V term too
  # Write mode: aggregate the segment into an m x d_h state,
  # H = H_neuron + H_astro = (phi(K) + phi(R))^T V / m.
  h = jnp.einsum("bhnm,bhnd->bhmd", phi_k + phi(r)[None], v) / m
  if hebbian_sigmoid:
    h = jax.nn.sigmoid(h)
  g = _safe_power(jnp.sum(phi_k, axis=2), alpha)  # [B, H, m]
  # Read mode.
  phi_q = phi(q)
  c = jnp.einsum("bhnm,bhm->bhn", phi_q, g)
  out = _safe_divide(jnp.einsum("bhnm,bhmd->bhnd", phi_q, h), c)
  return _zero_padded_queries(out, key_mask)


def linear_attention(q: Array, k: Array, v: Array, *,
                     key_mask: Array | None = None) -> Array:
  """RLT baseline: elu+1 linear attention with the standard normaliser (no R, no alpha)."""
  phi_k = _mask_keys(phi(k), key_mask)
  phi_q = phi(q)
  kv = jnp.einsum("bhnm,bhnd->bhmd", phi_k, v)
  den = jnp.einsum("bhnm,bhm->bhn", phi_q, jnp.sum(phi_k, axis=2))
  out = _safe_divide(jnp.einsum("bhnm,bhmd->bhnd", phi_q, kv), den)
  return _zero_padded_queries(out, key_mask)


# Trace-time refusals of cuDNN's fused attention (no cuDNN, an old version, a shape or
# layout it does not take); the XLA implementation computes the same function.
_CUDNN_REFUSALS = (NotImplementedError, RuntimeError, ValueError, TypeError)


def softmax_implementation(dtype, head_dim: int, backend: str | None = None) -> str | None:
  """The `jax.nn.dot_product_attention` implementation for this backend and shape.

  JAX's own default (None) is always XLA's. cuDNN's flash attention is the fast path on a
  GPU; it takes only 16-bit inputs and head sizes that are multiples of 8 up to 128, so other
  cases (and every CPU/TPU run) stay on XLA."""
  backend = backend or jax.default_backend()
  if (backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
      and head_dim % 8 == 0 and head_dim <= 128):
    return "cudnn"
  return None


def softmax_attention(q: Array, k: Array, v: Array, *,
                      key_mask: Array | None = None) -> Array:
  """RMT baseline: scaled dot-product softmax attention (quadratic in N).

  Through `jax.nn.dot_product_attention`, as RMT is run in practice: cuDNN's flash attention
  on a GPU where `softmax_implementation` says it applies (falling back to XLA if cuDNN
  refuses at trace time), XLA's fused softmax attention elsewhere, instead of
  materialising logits and probabilities as separate einsums. Two cases go through the
  einsum formula instead: values of another head size than the queries' (that function
  takes one), and float64 (it computes the softmax in float32)."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  if v.shape[-1] != q.shape[-1] or jnp.finfo(q.dtype).bits > 32:
    logits = jnp.einsum("bhim,bhjm->bhij", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    out = jnp.einsum("bhij,bhjd->bhid", jax.nn.softmax(logits, axis=-1), v)
  else:
    swap = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [B, H, N, m] <-> [B, N, H, m]
    attend = lambda impl: jax.nn.dot_product_attention(  # noqa: E731
        swap(q), swap(k), swap(v), mask=mask, implementation=impl)
    implementation = softmax_implementation(q.dtype, q.shape[-1])
    try:
      out = swap(attend(implementation))
    except _CUDNN_REFUSALS:
      if implementation is None:
        raise
      out = swap(attend(None))
  return _zero_padded_queries(out, key_mask)


class MultiHeadAttention(nn.Module):
  """Q/K/V projections, one of the three attention cores, heads concatenated, W_O."""

  num_heads: int
  kind: str = "astro"  # "astro" | "softmax" | "linear"
  alpha: float = 0.25
  hebbian_sigmoid: bool = False

  @nn.compact
  def __call__(self, x: Array, key_mask: Array | None,
               r: Array | None = None) -> Array:
    d = x.shape[-1]
    head_dim = d // self.num_heads
    proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), name=name)  # noqa: E731
    # [B, N, H, d_h] -> [B, H, N, d_h]
    q, k, v = (jnp.swapaxes(proj(n)(x), 1, 2) for n in ("query", "key", "value"))
    if self.kind == "astro":
      if r is None:
        raise ValueError("astro attention needs the positional matrix r [H, N, m]")
      out = astro_attention(q, k, v, r, alpha=self.alpha, key_mask=key_mask,
                            hebbian_sigmoid=self.hebbian_sigmoid)
    elif self.kind == "linear":
      out = linear_attention(q, k, v, key_mask=key_mask)
    elif self.kind == "softmax":
      out = softmax_attention(q, k, v, key_mask=key_mask)
    else:
      raise ValueError(f"unknown attention kind {self.kind!r}")
    out = jnp.swapaxes(out, 1, 2)  # [B, N, H, d_h]
    return nn.DenseGeneral(d, axis=(-2, -1), name="out")(out)


BLOCK_LAYOUTS = ("post_ln", "pre_ln")


class EncoderBlock(nn.Module):
  """One encoder block; `layout` says where the two LayerNorms sit (same parameters):

  - "post_ln": Y = LN(X + Drop(Attn(X))); Z = LN(Y + Drop(FFN(Y))). Every block output is
    normalised, so the memory rows leave a segment at unit scale.
  - "pre_ln":  Y = X + Drop(Attn(LN(X))); Z = Y + Drop(FFN(LN(Y))). The residual stream,
    memory rows included, passes unnormalised (the head normalises what it pools).
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.1
  attention: str = "astro"
  alpha: float = 0.25
  hebbian_sigmoid: bool = False
  layout: str = "post_ln"

  @nn.compact
  def __call__(self, x: Array, key_mask: Array | None, r: Array | None = None, *,
               deterministic: bool) -> Array:
    if self.layout not in BLOCK_LAYOUTS:
      raise ValueError(f"unknown block layout {self.layout!r}; use one of {BLOCK_LAYOUTS}")
    drop = lambda: Dropout(self.dropout_rate, deterministic=deterministic)  # noqa: E731
    attention = MultiHeadAttention(self.num_heads, self.attention, self.alpha,
                                   self.hebbian_sigmoid, name="attention")
    ln_attention, ln_mlp = LayerNorm(name="ln_attention"), LayerNorm(name="ln_mlp")
    mlp_in, mlp_out = Dense(self.mlp_dim, name="mlp_in"), Dense(x.shape[-1], name="mlp_out")
    pre = self.layout == "pre_ln"
    y = x + drop()(attention(ln_attention(x) if pre else x, key_mask, r))
    y = y if pre else ln_attention(y)
    h = mlp_out(drop()(gelu(mlp_in(ln_mlp(y) if pre else y))))
    z = y + drop()(h)
    return z if pre else ln_mlp(z)
