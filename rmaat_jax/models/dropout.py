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
The masks are a function of the key alone, so AMRB's replay redraws the same ones.

The backward pass keeps each mask packed, one bit per element (`_pack`): an eighth
of the boolean mask autodiff would keep, a sixteenth of the random words XLA otherwise keeps
to recompute it. Under BPTT that is stored for every segment and layer.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry_2x32

from rmaat_jax.models.config import MAX_DROPOUT_RATE

Array = jax.Array
BITS = 16
_BIT_INDEX = np.arange(8, dtype=np.uint8)[:, None]  # bit k of a packed byte


def _keep_rows(key: Array, words: int, threshold: int) -> Array:
  """[2, words] boolean: row 0 compares the low 16 bits of each random word with
  threshold, row 1 the high 16 bits."""
  if str(jax.random.key_impl(key)) == "threefry2x32":
    data = jax.random.key_data(key)
    bits = threefry_2x32((data[0], data[1]), lax.iota(jnp.uint32, words))
  else:
    bits = jax.random.bits(key, (words,), jnp.uint32)
  shifts = jnp.array([[0], [BITS]], jnp.uint32)
  return ((bits[None, :] >> shifts) & jnp.uint32(0xFFFF)) >= jnp.uint32(threshold)


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
  threshold = _threshold(rate)
  if threshold == 0:
    return x
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # a raw key: JAX's default implementation
  return _dropout(key, x, threshold)


# Element i of the flattened x is decided by the low half of random word i, element
# words + i by its high half: x is viewed as [2, words] (a bitcast), so that the mask and
# the select fuse into one vectorised loop with whatever produced x. (Concatenating the two
# halves' masks instead kept XLA's CPU backend from vectorising that loop: GELU + dropout
# of the Retrieval config's [8, 516, 512] MLP activation took 13 ms instead of 4, forward
# and backward 20 instead of 4.6.)

def _as_rows(x: Array) -> Array:
  """x flattened (and padded by one element if its size is odd) as [2, words]."""
  flat = x.reshape(-1)
  if flat.size % 2:
    flat = jnp.pad(flat, (0, 1))
  return flat.reshape(2, -1)


def _from_rows(rows: Array, like: Array) -> Array:
  return rows.reshape(-1)[:like.size].reshape(like.shape)


def _scale(threshold: int, dtype) -> Array:
  return jnp.asarray(2 ** BITS / (2 ** BITS - threshold), dtype)


def _pack(keep: Array) -> Array:
  """[2, words] bool -> [2, ceil(words / 8)] uint8: bit k of byte j holds element
  k * ceil(words / 8) + j of its row (a reduction over a leading axis, which vectorises,
  rather than over groups of 8 neighbours as `jnp.packbits`)."""
  chunk = -(-keep.shape[1] // 8)
  keep = jnp.pad(keep, ((0, 0), (0, 8 * chunk - keep.shape[1])))
  bits = keep.reshape(2, 8, chunk).astype(jnp.uint8) << _BIT_INDEX
  return jnp.sum(bits, axis=1, dtype=jnp.uint8)  # the bits are disjoint: sum = or


def _unpack(packed: Array, words: int) -> Array:
  bits = (packed[:, None, :] >> _BIT_INDEX) & jnp.uint8(1)
  return bits.reshape(2, -1)[:, :words].astype(bool)


def _dropout_fwd(key: Array, x: Array, threshold: int) -> tuple[Array, Array]:
  rows = _as_rows(x)
  keep = _keep_rows(key, rows.shape[1], threshold)
  out = jnp.where(keep, rows * _scale(threshold, x.dtype), jnp.zeros((), x.dtype))
  # The backward keeps the mask packed 8 decisions to a byte. Left to itself XLA keeps the
  # random words instead (2 bytes per element) and recomputes the comparison.
  return _from_rows(out, x), _pack(keep)


def _dropout_bwd(threshold: int, packed: Array, g: Array) -> tuple[None, Array]:
  rows = _as_rows(g)
  keep = _unpack(packed, rows.shape[1])
  dx = jnp.where(keep, rows * _scale(threshold, g.dtype), jnp.zeros((), g.dtype))
  return None, _from_rows(dx, g)


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
