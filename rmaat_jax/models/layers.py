"""GELU, the elu + 1 feature map, LayerNorm and Dense with lean or fast backward passes.

Autodiff of the textbook formulas keeps every intermediate for the backward pass: flax's
tanh-GELU four float32 [B, N, d_ff] tensors per layer, LayerNorm three or four [B, N, d],
elu + 1 its input beside its output. Under BPTT that is stored for every segment (most of
the per-segment memory of the Text config). Each function here is a `jax.custom_vjp` whose
residuals are what PyTorch keeps: GELU its input, elu + 1 its output, LayerNorm its input
and per-row statistics. Forward values are the same functions as flax's / jax's; gradients
equal autodiff's to float rounding (tests/test_layers.py).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _at_least_f32(x: Array) -> Array:
  """x in float32, or in its own dtype when that is wider (float64 under jax_enable_x64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@jax.custom_vjp
def gelu(x: Array) -> Array:
  """tanh-approximate GELU (= flax.linen.gelu); the backward pass keeps only `x`."""
  return jax.nn.gelu(x, approximate=True)


def _gelu_fwd(x: Array) -> tuple[Array, Array]:
  return gelu(x), x


def _gelu_bwd(x: Array, dy: Array) -> tuple[Array]:
  # With s = sigmoid(2u) = (1 + tanh u) / 2: d/dx [x s] = s + 2 x s (1 - s) du/dx, free of
  # the cancellation in 1 + tanh(u) for negative x.
  xf = _at_least_f32(x)
  s = jax.nn.sigmoid(2.0 * _SQRT_2_OVER_PI * (xf + _GELU_CUBIC * xf ** 3))
  du_dx = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * xf * xf)
  slope = s + 2.0 * xf * s * (1.0 - s) * du_dx
  return ((dy * slope).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


@jax.custom_vjp
def elu_plus_one(x: Array) -> Array:
  """phi(x) = elu(x) + 1 > 0; the backward pass keeps only the output y (which the
  attention keeps anyway): dphi/dx = 1 where x > 0, exp(x) = y elsewhere.

  Computed as exp(x) for x <= 0, not expm1(x) + 1: in bfloat16 the sum loses every bit of
  exp(x) below the 8-bit mantissa of 1 (a 58 % slope error on (-6, -5], exactly 0 below
  about -6.3), while exp(x) keeps full relative precision and phi stays > 0."""
  return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.minimum(x, 0.0)))


def _elu_fwd(x: Array) -> tuple[Array, Array]:
  y = elu_plus_one(x)
  return y, y


def _elu_bwd(y: Array, dy: Array) -> tuple[Array]:
  # y > 1 exactly where x > 0 (for tiny x > 0, y rounds to 1 and the slope y = 1 is exact).
  return (dy * jnp.where(y > 1.0, jnp.ones_like(y), y),)


elu_plus_one.defvjp(_elu_fwd, _elu_bwd)


def _stats(x: Array, epsilon: float) -> tuple[Array, Array]:
  xf = _at_least_f32(x)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) - mean ** 2, 0.0)
  return mean, jax.lax.rsqrt(var + epsilon)


def _layer_norm_fwd(x: Array, scale: Array, bias: Array, epsilon: float):
  mean, rstd = _stats(x, epsilon)
  y = ((_at_least_f32(x) - mean) * (rstd * _at_least_f32(scale)) + _at_least_f32(bias))
  # flax.linen.LayerNorm's output dtype: the promotion of input and parameters.
  out_dtype = jnp.result_type(x.dtype, scale.dtype, bias.dtype)
  return y.astype(out_dtype), (x, mean, rstd, scale, bias)


def _layer_norm_bwd(epsilon: float, residuals, dy: Array):
  del epsilon  # folded into rstd
  x, mean, rstd, scale, bias = residuals
  x_hat = (_at_least_f32(x) - mean) * rstd
  dyf = _at_least_f32(dy)
  reduce_axes = tuple(range(x.ndim - 1))
  d_scale = jnp.sum(dyf * x_hat, axis=reduce_axes).astype(scale.dtype)
  d_bias = jnp.sum(dyf, axis=reduce_axes).astype(bias.dtype)
  g = dyf * _at_least_f32(scale)
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True))
  return dx.astype(x.dtype), d_scale, d_bias


def _layer_norm(x: Array, scale: Array, bias: Array, epsilon: float = 1e-6) -> Array:
  """LayerNorm over the last axis (= flax.linen.LayerNorm); statistics in float32 (or
  wider).
  The backward pass keeps x and the per-row mean and 1 / std."""
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


layer_norm = jax.custom_vjp(_layer_norm, nondiff_argnums=(3,))
layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """flax.linen.LayerNorm's parameters ("scale", "bias") and values, with layer_norm's
  lean backward pass."""

  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    return layer_norm(x, scale, bias, self.epsilon)


def _matmul(x: Array, kernel: Array) -> Array:
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def matmul(x: Array, kernel: Array) -> Array:
  """x [..., d_in] @ kernel [d_in, d_out] (= autodiff's values and gradients). On CPU the
  weight gradient x^T dy is computed from an explicit transpose of x or of dy, whichever is
  smaller: XLA's CPU backend runs a dot that contracts both operands' row axis in Eigen,
  about 2x slower than its YNNPACK path for a transposed operand (the MLP's two weight
  gradients were a sixth of a Text training step)."""
  return _matmul(x, kernel)


def _matmul_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
  return _matmul(x, kernel), (x, kernel)


def _matmul_bwd(residuals: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
  x, kernel = residuals
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]).astype(x.dtype)
  if jax.default_backend() != "cpu":
    dkernel = jax.lax.dot_general(rows_x, rows_dy, (((0,), (0,)), ((), ())))
  elif x.shape[-1] <= dy.shape[-1]:
    # The barrier keeps the transpose a copy: without it XLA folds it back into the dot.
    dkernel = jax.lax.optimization_barrier(rows_x.T) @ rows_dy
  else:  # transpose the smaller operand: dW = (dy^T x)^T
    dkernel = jax.lax.optimization_barrier(jax.lax.optimization_barrier(rows_dy.T) @ rows_x).T
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
  """flax.linen.Dense's parameters ("kernel" [d_in, features], "bias"), computed in x's
  dtype (parameters are cast to it; flax would promote to float32): its values when the
  parameters arrive in x's dtype, as SegmentLayers passes them. The product is `matmul`."""

  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return matmul(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)
