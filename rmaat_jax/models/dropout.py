"""Dropout with 16-bit keep decisions: a quarter of the random bits that flax's uses.

`flax.linen.Dropout` draws one float32 uniform per element (`jax.random.bernoulli`): one
threefry2x32 hash per element, or 32 bits of XLA's RngBitGenerator. Dropout needs far less
resolution, so here each element gets 16 random bits, compared with an integer threshold:

    drop  <=>  bits < round(rate * 2**16),   kept values scaled by 1 / P(keep)

- Threefry keys: `jax.extend.random.threefry_2x32` over a counter, which returns two 32-bit
  words per hash (JAX's own non-partitionable `random_bits` scheme): 4 decisions per hash
  instead of 1. rbg keys: half as many 32-bit words from RngBitGenerator.
- The realised rate is round(rate * 2**16) / 2**16, within 2**-17 of `rate` (0.1 ->
  0.1000061); the scale uses that realised rate, so E[output] = input exactly up to the
  rounding of the scale to x's dtype (in bfloat16 1 / 0.9 becomes 1.109375, as with flax).
  (FlashAttention quantises its dropout rate to 8 bits; 16 is finer than any config needs.)

One core of the 2-core CPU machine draws the 12.6 M masked elements of a Text-config
training step (2 segments, batch 2) in ~199 ms the flax way and ~65 ms this way (rbg: ~245
vs ~144 ms); on a GPU the bits buffer is half as large.
The masks are a function of the key and the shape, so AMRB's replay redraws the same ones.

The backward pass keeps each mask packed, one bit per element: an eighth of the boolean
mask autodiff would keep, a sixteenth of the random words XLA otherwise keeps to recompute
it. Under BPTT that is stored for every segment and layer. (Which random bits decide which
element: the layout note below `dropout`. Rows are padded to a multiple of 8, so a tensor
with few rows, e.g. 1-D, draws and keeps up to 8x that; the model's are [B, M + S, d].)
`dropout` is a `jax.custom_vjp`: reverse mode only (jvp, jacfwd and linearize raise).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry_2x32

from rmaat_jax.models.config import MAX_DROPOUT_RATE, MIN_DROPOUT_RATE, dropout_realises_nothing

Array = jax.Array
BITS = 16
_BIT = (1 << np.arange(8, dtype=np.uint8))[:, None, None]  # bit k of a packed byte
_HALF_SHIFT = np.array([0, BITS], np.uint32)[:, None, None, None]


def _random_words(key: Array, count: int) -> Array:
  """`count` random uint32 words from a threefry or rbg key."""
  if str(jax.random.key_impl(key)) == "threefry2x32":
    data = jax.random.key_data(key)
    return threefry_2x32((data[0], data[1]), lax.iota(jnp.uint32, count))
  return jax.random.bits(key, (count,), jnp.uint32)


def _threshold(rate: float) -> int:
  """Elements whose 16 random bits are below this are dropped."""
  return round(rate * 2 ** BITS)


def realised_rate(rate: float) -> float:
  """The drop probability that `dropout` applies for `rate` (a multiple of 2**-16)."""
  return _threshold(rate) / 2 ** BITS


def dropout(key: Array, x: Array, rate: float) -> Array:
  """Zeroes each element of x with probability `realised_rate(rate)` and scales the rest
  by 1 / (1 - that), computed in x.dtype; rate in [0, MAX_DROPOUT_RATE = 1 - 2**-17)."""
  if not 0.0 <= rate < MAX_DROPOUT_RATE:
    raise ValueError(f"dropout rate must be in [0, 1) and below 1 - 2**-17 (it rounds to a "
                     f"multiple of 2**-16), got {rate}")
  if dropout_realises_nothing(rate):
    raise ValueError(f"dropout rate {rate} rounds to 0 at 16 bits (nothing would be "
                     f"dropped); use 0 or at least {MIN_DROPOUT_RATE:.3g} (2**-16)")
  threshold = _threshold(rate)
  if threshold == 0:
    return x
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # a raw key: JAX's default implementation
  return _dropout(key, x, threshold)


# Layout. x is viewed as [rows, F] (F its last axis), rows padded to 8 * chunk. Decision
# (k, r, f) for row k * chunk + r, k = 0..7, compares 16 bits of random word (k % 4, r, f):
# its low half for k < 4, its high half otherwise. The backward keeps the mask packed, bit
# k of byte (r, f). Every index map keeps the last axis whole, so the comparison, the
# select, the packing and the unpacking each fuse into one vectorised loop with their
# neighbours (the GELU, its backward). Two layouts that do not were 3-12x slower on XLA's
# CPU backend: concatenating the two halves' masks over the flattened tensor, and packing
# over a split of the flattened tensor (docs/method.md 5.1).

def _decisions(key: Array, chunk: int, features: int, threshold: int) -> Array:
  """[8, chunk, features] boolean keep mask."""
  words = _random_words(key, 4 * chunk * features).reshape(1, 4, chunk, features)
  halves = (words >> _HALF_SHIFT) & jnp.uint32(0xFFFF)  # [2, 4, chunk, features]
  return (halves >= jnp.uint32(threshold)).reshape(8, chunk, features)


def _rows(x: Array) -> tuple[int, int, int]:
  """(rows, chunk = ceil(rows / 8), features) of x viewed as [rows, features]."""
  features = x.shape[-1] if x.ndim else 1
  rows = x.size // max(features, 1)
  return rows, -(-rows // 8), features


def _scale(threshold: int, dtype) -> Array:
  return jnp.asarray(2 ** BITS / (2 ** BITS - threshold), dtype)


def _dropout_fwd(key: Array, x: Array, threshold: int) -> tuple[Array, Array]:
  rows, chunk, features = _rows(x)
  keep = _decisions(key, chunk, features, threshold)
  keep_x = keep.reshape(8 * chunk, features)[:rows].reshape(x.shape)
  out = jnp.where(keep_x, x * _scale(threshold, x.dtype), jnp.zeros((), x.dtype))
  # Left to autodiff, XLA keeps a boolean per element or the random words (2 bytes).
  packed = jnp.sum(jnp.where(keep, _BIT, jnp.uint8(0)), axis=0, dtype=jnp.uint8)
  return out, packed  # the bits are disjoint: the sum is their or


def _dropout_bwd(threshold: int, packed: Array, g: Array) -> tuple[None, Array]:
  rows, chunk, features = _rows(g)
  keep = ((packed[None] & _BIT) != 0).reshape(8 * chunk, features)[:rows].reshape(g.shape)
  return None, jnp.where(keep, g * _scale(threshold, g.dtype), jnp.zeros((), g.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dropout(key: Array, x: Array, threshold: int) -> Array:
  return _dropout_fwd(key, x, threshold)[0]


_dropout.defvjp(_dropout_fwd, _dropout_bwd)


class Dropout(nn.Module):
  """`flax.linen.Dropout`'s attributes (rate, deterministic, rng_collection; not its
  call-time arguments or broadcast_dims) with `dropout`'s 16-bit decisions."""

  rate: float
  deterministic: bool = False
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.deterministic or self.rate == 0.0:
      return x
    return dropout(self.make_rng(self.rng_collection), x, self.rate)
