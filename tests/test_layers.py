"""The lean-backward GELU, elu + 1, LayerNorm and Dense equal flax's / jax's in value and
gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmaat_jax.models.layers import Dense, LayerNorm, elu_plus_one, gelu

# Around the kinks and far out: 0, tiny positives (elu + 1 rounds to 1), large magnitudes.
EDGES = np.array([0.0, 1e-9, -1e-9, 1e-4, -30.0, 30.0, -3.0, 3.0], np.float32)


def _inputs(shape, seed=0):
  x = np.asarray(jax.random.normal(jax.random.key(seed), shape)) * 3
  x.reshape(-1)[:EDGES.size] = EDGES
  return jnp.asarray(x)


def _gelu_slope_float64(x):
  x = np.float64(x)
  c = np.sqrt(2 / np.pi)
  t = np.tanh(c * (x + 0.044715 * x ** 3))
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


def _elu_plus_one_float64(x):
  x = np.float64(x)
  return np.where(x > 0, x + 1, np.exp(x))


@pytest.mark.parametrize("ours, reference, slope, value64", [
    (gelu, lambda x: nn.gelu(x), _gelu_slope_float64, None),
    (elu_plus_one, lambda x: jax.nn.elu(x) + 1.0,
     lambda x: np.where(np.float64(x) > 0, 1.0, np.exp(np.float64(x))), _elu_plus_one_float64),
])
def test_activation_values_and_gradients_match(ours, reference, slope, value64):
  x = _inputs((4, 33, 16))
  if value64 is None:
    np.testing.assert_array_equal(ours(x), reference(x))
  else:  # exp(x) for x <= 0: within an ulp of the truth, jax's expm1(x) + 1 within 1e-7
    np.testing.assert_allclose(ours(x), value64(x), rtol=1.2e-7, atol=0)
    np.testing.assert_allclose(ours(x), reference(x), rtol=0, atol=1.2e-7)
  w = jax.random.normal(jax.random.key(1), x.shape)
  grad = jax.grad(lambda x: jnp.sum(ours(x) * w))(x)
  autodiff = jax.grad(lambda x: jnp.sum(reference(x) * w))(x)
  # autodiff of the float32 formula loses up to ~2.5e-5 to cancellation in the tails (at
  # x = -7.25: 2.4e-5 where the truth is 3e-15, with XLA CPU's classic emitters' tanh):
  # compared loosely, and the float64 truth decides.
  np.testing.assert_allclose(grad, autodiff, rtol=1e-5, atol=5e-5)
  # Against the float64 derivative: a few float32 ulps everywhere, tails included.
  np.testing.assert_allclose(grad, slope(x) * np.float64(w), rtol=3e-6, atol=1e-7)


def test_elu_plus_one_keeps_its_precision_and_positivity_in_bfloat16():
  # expm1(x) + 1 in bf16 loses exp(x) below the mantissa of 1 (58 % slope error on
  # (-6, -5], exactly 0 below about -6.3); the value and slope must hold to bf16 precision.
  x = jnp.linspace(-12.0, 4.0, 4097).astype(jnp.bfloat16)
  x64 = np.asarray(x, np.float64)
  want = np.where(x64 > 0, x64 + 1, np.exp(x64))
  y = np.asarray(elu_plus_one(x), np.float64)
  assert np.all(y > 0)
  np.testing.assert_allclose(y, want, rtol=2 ** -8)  # bf16: 8 significant bits
  slope = np.asarray(jax.grad(lambda x: jnp.sum(elu_plus_one(x).astype(jnp.float32)))(x),
                     np.float64)
  np.testing.assert_allclose(slope, np.where(x64 > 0, 1.0, np.exp(x64)), rtol=2 ** -7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_flax(dtype):
  x = _inputs((3, 17, 32)).astype(dtype) + 5.0  # an offset: the mean matters
  ours, theirs = LayerNorm(), nn.LayerNorm()
  params = theirs.init(jax.random.key(0), x)
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  assert jax.tree_util.tree_structure(ours.init(jax.random.key(0), x)) == \
      jax.tree_util.tree_structure(params)  # same parameter names: checkpoints carry over
  w = jax.random.normal(jax.random.key(3), x.shape).astype(dtype)

  def loss(module, params, x):
    return jnp.sum(module.apply(params, x).astype(jnp.float32) * w)

  y, want_y = ours.apply(params, x), theirs.apply(params, x)
  assert y.dtype == want_y.dtype  # flax promotes bf16 inputs with float32 parameters
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(np.float32(y), np.float32(want_y), **tol)
  grads = jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1))(params, x)
  want = jax.grad(lambda p, x: loss(theirs, p, x), argnums=(0, 1))(params, x)
  for got, ref in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want),
                      strict=True):
    np.testing.assert_allclose(np.float32(got), np.float32(ref), **tol)


# 40 > 24 and 16 < 24 features: the backward transposes x, or dy, whichever is smaller.
@pytest.mark.parametrize("features", [40, 16])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_matches_flax(dtype, features):
  x = _inputs((3, 17, 24)).astype(dtype)
  ours, theirs = Dense(features), nn.Dense(features)
  params = theirs.init(jax.random.key(0), x)
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  mine = ours.init(jax.random.key(0), x)
  assert jax.tree_util.tree_map(jnp.shape, mine) == jax.tree_util.tree_map(jnp.shape, params)
  w = jax.random.normal(jax.random.key(3), (3, 17, features)).astype(dtype)

  def loss(module, params, x):
    # The module casts float32 parameters to the input's dtype, as SegmentLayers does.
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    return jnp.sum(module.apply(params, x).astype(jnp.float32) * w)

  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(loss(ours, params, x), loss(theirs, params, x), rtol=tol)
  grads = jax.grad(loss, argnums=(1, 2))(ours, params, x)
  want = jax.grad(loss, argnums=(1, 2))(theirs, params, x)
  for got, expected in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want),
                           strict=True):
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(np.float32(got), np.float32(expected), rtol=tol, atol=tol)
