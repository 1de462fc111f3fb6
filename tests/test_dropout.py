"""16-bit dropout: the realised rate, an unbiased scale, keyed masks, both key kinds."""

import re

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from rmaat_jax.models.dropout import Dropout, dropout, realised_rate

SHAPE = (4, 257, 255)  # 1028 rows: not a multiple of 8, so 4 padding rows go unused


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_rate_and_scale(impl, rate):
  x = jnp.ones(SHAPE)
  y = np.asarray(dropout(jax.random.key(3, impl=impl), x, rate))
  n = y.size
  dropped = np.mean(y == 0)
  # The drop fraction is binomial: 5 standard deviations around the realised rate.
  p = realised_rate(rate)
  assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n), (dropped, p)
  np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
  # Both 16-bit halves of each random word are used, and neither is biased: rows
  # k * chunk + r take the low halves for k < 4, the high halves for k >= 4.
  rows = y.reshape(-1, SHAPE[-1]) == 0
  chunk = -(-rows.shape[0] // 8)
  for part in (rows[: 4 * chunk], rows[4 * chunk:]):
    assert abs(np.mean(part) - p) < 5 * np.sqrt(p * (1 - p) / part.size)


@pytest.mark.parametrize("shape", [(16, 24, 8), (3, 5, 7)])  # rows 384 (8 | rows) and 15
def test_which_bits_decide_which_element(shape):
  # Row k * chunk + r of the [rows, F] view compares 16 bits of word (k % 4, r, f): the low
  # half for k < 4. With 8 | rows that is the flattened layout "element e < n/2 takes the
  # low half of word e, element n/2 + e its high half" (the masks before the row layout).
  key = jax.random.key(7)
  rows, features = int(np.prod(shape[:-1])), shape[-1]
  chunk = -(-rows // 8)
  # The counter's length matters: the hash pairs counter i with i + length / 2.
  words = np.asarray(threefry_2x32(tuple(jax.random.key_data(key)),
                                   np.arange(4 * chunk * features, dtype=np.uint32)))
  k, r = np.divmod(np.arange(rows), chunk)
  word = words[((k % 4) * chunk + r)[:, None] * features + np.arange(features)]
  half = np.where((k >= 4)[:, None], word >> 16, word & 0xFFFF)
  expected = half >= round(0.3 * 2 ** 16)
  kept = np.asarray(dropout(key, jnp.ones(shape), 0.3)).reshape(rows, features) != 0
  np.testing.assert_array_equal(kept, expected)
  if rows % 8 == 0:
    n = rows * features
    flat = np.arange(n)
    w = words[flat % (n // 2)]
    np.testing.assert_array_equal(
        kept.reshape(-1), np.where(flat < n // 2, w & 0xFFFF, w >> 16) >= round(0.3 * 2 ** 16))


def test_realised_rate_is_close():
  for rate in (0.0, 0.05, 0.1, 0.3, 0.999):
    assert abs(realised_rate(rate) - rate) <= 2.0 ** -17
  assert realised_rate(0.1) * 2 ** 16 == 6554


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_masks_are_keyed(impl):
  x = jnp.ones((64, 64))
  a = dropout(jax.random.key(1, impl=impl), x, 0.3)
  b = dropout(jax.random.key(1, impl=impl), x, 0.3)
  c = dropout(jax.random.key(2, impl=impl), x, 0.3)
  np.testing.assert_array_equal(a, b)
  assert np.mean(np.asarray(a) != np.asarray(c)) > 0.2
  # Under jit the same key gives the same mask (AMRB's replay relies on it).
  np.testing.assert_array_equal(jax.jit(lambda k: dropout(k, x, 0.3))(
      jax.random.key(1, impl=impl)), a)


def test_raw_keys_use_the_default_implementation():
  x = jnp.ones((32, 32))
  np.testing.assert_array_equal(dropout(jax.random.PRNGKey(5), x, 0.2),
                                dropout(jax.random.key(5), x, 0.2))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("shape", [(16, 32), SHAPE, (7,), ()])
def test_gradient_is_the_mask_times_the_scale(impl, shape):
  # The backward unpacks a bit-packed copy of the forward's mask (padded for odd sizes).
  x = jax.random.normal(jax.random.key(0), shape)
  g = jax.random.normal(jax.random.key(1), shape)
  key = jax.random.key(4, impl=impl)
  y, vjp = jax.vjp(lambda x: dropout(key, x, 0.25), x)
  p = realised_rate(0.25)
  np.testing.assert_allclose(vjp(g)[0], np.where(np.asarray(y) != 0, g / (1 - p), 0.0),
                             rtol=1e-6)


def test_backward_keeps_one_bit_per_element(capsys):
  x = jnp.ones(SHAPE)
  jax.ad_checkpoint.print_saved_residuals(lambda x: dropout(jax.random.key(0), x, 0.1), x)
  chunk = -(-(x.size // SHAPE[-1]) // 8)  # 8 rows of x per packed row
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 and re.match(rf"u(int)?8\[{chunk},{SHAPE[-1]}\]", lines[0]), lines


def test_module_is_flax_dropout_interface():
  x = jnp.ones((8, 16))
  module = Dropout(0.5)
  assert Dropout(0.5, deterministic=True).apply({}, x) is x
  assert Dropout(0.0).apply({}, x) is x
  y = module.apply({}, x, rngs={"dropout": jax.random.key(0)})
  assert 0 < np.mean(np.asarray(y) == 0) < 1
  for rate in (1.0, 0.999995, -0.1):  # 0.999995 would round to 1: everything dropped
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
      dropout(jax.random.key(0), x, rate)
  # Positive rates up to 2**-17 round to a threshold of 0: refused, not silently no dropout.
  for rate in (1e-6, 2.0 ** -17):
    with pytest.raises(ValueError, match=r"rounds to 0 .* at least 1\.53e-05"):
      dropout(jax.random.key(0), x, rate)


@pytest.mark.parametrize("rate", [0.99999, 2.0 ** -16])
def test_extreme_rates_keep_their_realised_fraction_and_scale(rate):
  # 0.99999 keeps 1 element in 2**16 (scaled by 2**16); 2**-16 drops 1 in 2**16.
  p = realised_rate(rate)
  assert p == (round(rate * 2 ** 16)) / 2 ** 16 and 0 < p < 1
  x = jnp.ones((64, 2 ** 14))  # 2**20 elements: 16 expected on the rare side
  y = np.asarray(dropout(jax.random.key(5), x, rate))
  kept = y[y != 0]
  np.testing.assert_array_equal(kept, np.float32(1 / (1 - p)))
  rare = kept.size if p > 0.5 else y.size - kept.size
  assert 1 <= rare <= 40, rare  # Poisson(16): outside [1, 40] with probability < 1e-6
