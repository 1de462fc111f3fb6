"""PyTorch building blocks of RMAAT, mirroring rmaat_jax/models/{attention,position}.py.

Every parameter is stored in Flax's layout and under Flax's name (Dense `kernel` is
[in..., out...], LayerNorm has `scale`/`bias`, Embed has `embedding`), so a torch module's
`named_parameters()` path equals the Flax params path: loading JAX weights and returning
torch gradients in the JAX tree are plain renames, with no transposes to get wrong.

Numerics that must match Flax (checked by tests/test_torch_parity.py):
- LayerNorm epsilon 1e-6 (Flax default; torch's default is 1e-5).
- GELU: flax.linen.gelu defaults to the tanh approximation -> approximate="tanh".
- Softmax masking with the dtype's most negative finite value, as jnp.finfo(dtype).min.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmaat_jax.models.position import distance_kernel


class _EluPlusOne(torch.autograd.Function):
  """The JAX model's elu_plus_one: exp(x) for x <= 0 (expm1(x) + 1 loses exp(x)'s precision
  in bfloat16), and a backward that keeps only the output y: dphi/dx = 1 where y > 1 (x > 0),
  y elsewhere. Written with torch ops alone, autograd would keep x's mask, the clamp's input
  and exp's output: 12.5 MiB more per BPTT segment of the Text config. exp(min(x, 0)) +
  max(x, 0) is JAX's where(x > 0, x + 1, exp(x)) bit for bit, in three kernels instead of
  five: forward + backward of a [2, 4, 513, 64] input on one core 0.63 ms, F.elu(x) + 1
  0.71 ms, the where form 4.5 ms."""

  @staticmethod
  def forward(ctx, x: Tensor) -> Tensor:
    y = torch.exp(torch.clamp(x, max=0.0)).add_(torch.clamp(x, min=0.0))
    ctx.save_for_backward(y)
    return y

  @staticmethod
  def backward(ctx, dy: Tensor) -> Tensor:
    (y,) = ctx.saved_tensors
    return dy * y.clamp(max=1.0)


def phi(x: Tensor) -> Tensor:
  """elu(x) + 1, strictly positive (docs/method.md section 2)."""
  return _EluPlusOne.apply(x)


def gelu(x: Tensor) -> Tensor:
  return F.gelu(x, approximate="tanh")  # flax.linen.gelu(approximate=True)


def dropout(x: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
  """Inverted dropout drawing its mask from `generator`; identity when generator is None.

  An explicit generator (seeded per segment, like JAX's fold_in(key, t)) is what lets the
  AMRB replay recompute exactly the masks the forward pass used.
  """
  if generator is None or rate == 0.0:
    return x
  keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= rate
  return torch.where(keep, x / (1.0 - rate), torch.zeros((), dtype=x.dtype, device=x.device))


# ----------------------------------------------------------------------------- attention
def _mask_keys(features: Tensor, key_mask: Tensor | None) -> Tensor:
  if key_mask is None:
    return features
  return features * key_mask[:, None, :, None].to(features.dtype)


def _zero_padded_queries(out: Tensor, key_mask: Tensor | None) -> Tensor:
  if key_mask is None:
    return out
  return torch.where(key_mask[:, None, :, None], out, torch.zeros((), dtype=out.dtype,
                                                                   device=out.device))


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
  # den == 0 only for a row without any real key; the JAX code defines its output as 0.
  return num / torch.where(den == 0, torch.ones_like(den), den)[..., None]


def astro_attention(q: Tensor, k: Tensor, v: Tensor, r: Tensor, *, alpha: float = 0.25,
                    key_mask: Tensor | None = None, hebbian_sigmoid: bool = False) -> Tensor:
  """q, k [B, H, N, m], v [B, H, N, d_h], r [H, N, m] (raw) -> [B, H, N, d_h]."""
  m = q.shape[-1]
  phi_k = _mask_keys(phi(k), key_mask)
  v = _mask_keys(v, key_mask)
  # Write mode: H = (phi(K) + phi(R))^T V / m and g = (sum_t phi(k_t)) ** alpha.
  h = torch.einsum("bhnm,bhnd->bhmd", phi_k + phi(r)[None], v) / m
  if hebbian_sigmoid:
    h = torch.sigmoid(h)
  g = phi_k.sum(dim=2) ** alpha
  # Read mode.
  phi_q = phi(q)
  c = torch.einsum("bhnm,bhm->bhn", phi_q, g)
  out = _safe_divide(torch.einsum("bhnm,bhmd->bhnd", phi_q, h), c)
  return _zero_padded_queries(out, key_mask)


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *,
                     key_mask: Tensor | None = None) -> Tensor:
  """RLT baseline: elu+1 features, standard normaliser."""
  phi_k = _mask_keys(phi(k), key_mask)
  phi_q = phi(q)
  kv = torch.einsum("bhnm,bhnd->bhmd", phi_k, v)
  den = torch.einsum("bhnm,bhm->bhn", phi_q, phi_k.sum(dim=2))
  out = _safe_divide(torch.einsum("bhnm,bhmd->bhnd", phi_q, kv), den)
  return _zero_padded_queries(out, key_mask)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *,
                      key_mask: Tensor | None = None) -> Tensor:
  """RMT baseline: scaled dot-product softmax attention, through torch's fused
  `F.scaled_dot_product_attention` (flash / memory-efficient kernels where the device and
  dtype allow), as RMT is run in practice."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return _zero_padded_queries(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                              key_mask)


# ----------------------------------------------------------------------------- layers
class Dense(nn.Module):
  """flax.linen.Dense / DenseGeneral: contracts the trailing `in_shape` axes of x."""

  def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    super().__init__()
    self.num_in = len(in_shape)
    self.kernel = nn.Parameter(torch.empty(*in_shape, *out_shape))
    self.bias = nn.Parameter(torch.zeros(*out_shape))

  def forward(self, x: Tensor) -> Tensor:
    return torch.tensordot(x, self.kernel, dims=self.num_in) + self.bias


class LayerNorm(nn.Module):
  """flax.linen.LayerNorm over the last axis (epsilon 1e-6)."""

  def __init__(self, dim: int, eps: float = 1e-6):
    super().__init__()
    self.eps = eps
    self.scale = nn.Parameter(torch.ones(dim))
    self.bias = nn.Parameter(torch.zeros(dim))

  def forward(self, x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), self.scale, self.bias, self.eps)


class Embed(nn.Module):
  def __init__(self, vocab_size: int, dim: int):
    super().__init__()
    self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

  def forward(self, tokens: Tensor) -> Tensor:
    return F.embedding(tokens, self.embedding)


class MultiHeadAttention(nn.Module):
  """Q/K/V projections [d -> (H, d_h)], one attention core, W_O [(H, d_h) -> d]."""

  def __init__(self, dim: int, num_heads: int, kind: str, alpha: float,
               hebbian_sigmoid: bool):
    super().__init__()
    if kind not in ("astro", "softmax", "linear"):
      raise ValueError(f"unknown attention kind {kind!r}")
    head_dim = dim // num_heads
    self.kind, self.alpha, self.hebbian_sigmoid = kind, alpha, hebbian_sigmoid
    self.query = Dense((dim,), (num_heads, head_dim))
    self.key = Dense((dim,), (num_heads, head_dim))
    self.value = Dense((dim,), (num_heads, head_dim))
    self.out = Dense((num_heads, head_dim), (dim,))

  def forward(self, x: Tensor, key_mask: Tensor | None, r: Tensor | None) -> Tensor:
    # [B, N, H, d_h] -> [B, H, N, d_h]
    q, k, v = (proj(x).transpose(1, 2) for proj in (self.query, self.key, self.value))
    if self.kind == "astro":
      if r is None:
        raise ValueError("astro attention needs the positional matrix r [H, N, m]")
      out = astro_attention(q, k, v, r, alpha=self.alpha, key_mask=key_mask,
                            hebbian_sigmoid=self.hebbian_sigmoid)
    elif self.kind == "linear":
      out = linear_attention(q, k, v, key_mask=key_mask)
    else:
      out = softmax_attention(q, k, v, key_mask=key_mask)
    return self.out(out.transpose(1, 2))


class EncoderBlock(nn.Module):
  """The JAX EncoderBlock: "post_ln" Y = LN(X + Drop(Attn(X))), Z = LN(Y + Drop(FFN(Y)));
  "pre_ln" Y = X + Drop(Attn(LN(X))), Z = Y + Drop(FFN(LN(Y))). Same parameters."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout_rate: float,
               attention: str, alpha: float, hebbian_sigmoid: bool, layout: str = "post_ln"):
    super().__init__()
    if layout not in ("post_ln", "pre_ln"):
      raise ValueError(f"unknown block layout {layout!r}; use 'post_ln' or 'pre_ln'")
    self.rate, self.pre_ln = dropout_rate, layout == "pre_ln"
    self.attention = MultiHeadAttention(dim, num_heads, attention, alpha, hebbian_sigmoid)
    self.ln_attention = LayerNorm(dim)
    self.mlp_in = Dense((dim,), (mlp_dim,))
    self.mlp_out = Dense((mlp_dim,), (dim,))
    self.ln_mlp = LayerNorm(dim)

  def forward(self, x: Tensor, key_mask: Tensor | None, r: Tensor | None,
              generator: torch.Generator | None) -> Tensor:
    pre = self.pre_ln
    attn = self.attention(self.ln_attention(x) if pre else x, key_mask, r)
    y = x + dropout(attn, self.rate, generator)
    y = y if pre else self.ln_attention(y)
    h = gelu(self.mlp_in(self.ln_mlp(y) if pre else y))
    z = y + dropout(self.mlp_out(dropout(h, self.rate, generator)), self.rate, generator)
    return z if pre else self.ln_mlp(z)


class AstroPositions(nn.Module):
  """One positional matrix R [H, N, m] per layer: learned ("projected") or fixed."""

  def __init__(self, num_layers: int, num_heads: int, num_tokens: int, head_dim: int,
               kind: str, scale: float):
    super().__init__()
    self.kind, self.num_layers = kind, num_layers
    if kind == "distance":
      p = np.arange(num_tokens) / max(num_tokens - 1, 1)
      c = np.arange(head_dim) / max(head_dim - 1, 1)
      r = np.exp(-scale * np.abs(p[:, None] - c[None, :]))
      r = np.broadcast_to(r, (num_heads, num_tokens, head_dim)).astype(np.float32)
      self.register_buffer("r", torch.from_numpy(r.copy()), persistent=False)
    else:
      for layer in range(num_layers):
        self.register_parameter(f"e_{layer}", nn.Parameter(
            torch.empty(num_heads, head_dim, num_tokens)))
      kernel = distance_kernel(num_tokens, scale).astype(np.float32)
      self.register_buffer("kernel", torch.from_numpy(kernel), persistent=False)

  def forward(self) -> tuple[Tensor, ...]:
    if self.kind == "distance":
      return (self.r,) * self.num_layers
    rs = []
    for layer in range(self.num_layers):
      e = getattr(self, f"e_{layer}")
      gram = torch.einsum("hmn,nk,hjk->hmj", e, self.kernel, e)  # E P E^T [H, m, m]
      rs.append(torch.einsum("hmn,hmj->hnj", e, gram))  # R = E^T (E P E^T) [H, N, m]
    return tuple(rs)
