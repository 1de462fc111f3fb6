"""Attention cores against O(N^2) references written from the formulas of docs/method.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_walk import all_eqns

from rmaat_jax.models import attention, position

B, H, N, M_DIM, D_H = 2, 3, 11, 4, 5


def _inputs(seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (B, H, N, M_DIM))
  k = jax.random.normal(keys[1], (B, H, N, M_DIM))
  v = jax.random.normal(keys[2], (B, H, N, D_H))
  r = jax.random.normal(keys[3], (H, N, M_DIM))
  return q, k, v, r


def _mask():
  mask = np.ones((B, N), bool)
  mask[0, 7:] = False  # right padding
  mask[1, [2, 5]] = False  # arbitrary holes
  return jnp.asarray(mask)


def _phi(x):
  x = np.asarray(x, np.float64)
  return np.where(x > 0, x + 1.0, np.exp(x))


def astro_reference(q, k, v, r, alpha, mask, hebbian_sigmoid=False):
  """out_i = sum_t [phi(q_i).phi(k_t) + phi(q_i).phi(r_t)] v_t
             / (m * phi(q_i).(sum_t phi(k_t)) ** alpha), loops over (b, h, i, t)."""
  q, k, r = _phi(q), _phi(k), _phi(r)
  v = np.asarray(v, np.float64)
  mask = np.ones((B, N), bool) if mask is None else np.asarray(mask)
  out = np.zeros(v.shape)
  for b in range(B):
    for h in range(H):
      real = np.flatnonzero(mask[b])
      g = k[b, h, real].sum(0) ** alpha
      if hebbian_sigmoid:
        hebb = sum(np.outer(k[b, h, t] + r[h, t], v[b, h, t]) for t in real) / M_DIM
        hebb = 1.0 / (1.0 + np.exp(-hebb))
      for i in real:
        if hebbian_sigmoid:
          num = q[b, h, i] @ hebb
        else:
          num = sum((q[b, h, i] @ k[b, h, t] + q[b, h, i] @ r[h, t]) * v[b, h, t]
                    for t in real) / M_DIM
        out[b, h, i] = num / (q[b, h, i] @ g)
  return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("alpha", [0.25, 1.0])
@pytest.mark.parametrize("hebbian_sigmoid", [False, True])
def test_astro_attention_matches_quadratic_reference(masked, alpha, hebbian_sigmoid):
  q, k, v, r = _inputs()
  mask = _mask() if masked else None
  out = attention.astro_attention(q, k, v, r, alpha=alpha, key_mask=mask,
                                  hebbian_sigmoid=hebbian_sigmoid)
  assert out.shape == (B, H, N, D_H)
  ref = astro_reference(q, k, v, r, alpha, mask, hebbian_sigmoid)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("core", ["astro", "linear", "softmax"])
def test_padded_tokens_change_nothing(core):
  q, k, v, r = _inputs()
  mask = _mask()
  q2, k2, v2, _ = _inputs(seed=1)  # different content everywhere ...
  keep = mask[:, None, :, None]  # ... but identical on real tokens
  q2, k2, v2 = (jnp.where(keep, a, b) for a, b in ((q, q2), (k, k2), (v, v2)))

  def run(q, k, v):
    if core == "astro":
      return attention.astro_attention(q, k, v, r, key_mask=mask)
    return getattr(attention, f"{core}_attention")(q, k, v, key_mask=mask)

  out, out2 = run(q, k, v), run(q2, k2, v2)
  np.testing.assert_allclose(np.asarray(out), np.asarray(out2), rtol=1e-6, atol=1e-6)
  # Padded query rows output exactly 0.
  assert not np.any(np.asarray(out)[~np.asarray(keep).repeat(H, 1).repeat(D_H, 3)])


def test_linear_attention_matches_reference():
  q, k, v, _ = _inputs()
  mask = _mask()
  out = attention.linear_attention(q, k, v, key_mask=mask)
  pq, pk = _phi(q), _phi(k) * np.asarray(mask)[:, None, :, None]
  scores = np.einsum("bhim,bhjm->bhij", pq, pk)
  ref = np.einsum("bhij,bhjd->bhid", scores / scores.sum(-1, keepdims=True), v)
  ref *= np.asarray(mask)[:, None, :, None]
  np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("same_head_size", [True, False])  # jax.nn.dot_product_attention
def test_softmax_attention_matches_reference(same_head_size):  # or the einsum formula
  q, k, v, _ = _inputs()
  if same_head_size:
    v = v[..., :M_DIM]
  mask = _mask()
  out = attention.softmax_attention(q, k, v, key_mask=mask)
  logits = np.einsum("bhim,bhjm->bhij", np.asarray(q, np.float64), k) / np.sqrt(M_DIM)
  logits = np.where(np.asarray(mask)[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  ref = np.einsum("bhij,bhjd->bhid", weights / weights.sum(-1, keepdims=True), v)
  ref *= np.asarray(mask)[:, None, :, None]
  np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-5, atol=1e-6)



@pytest.mark.parametrize("backend, dtype, head_dim, expected", [
    ("gpu", jnp.bfloat16, 64, "cudnn"), ("cuda", jnp.float16, 128, "cudnn"),
    ("gpu", jnp.float32, 64, None),       # cuDNN's flash attention takes 16-bit inputs only
    ("gpu", jnp.bfloat16, 20, None),      # head sizes: multiples of 8
    ("gpu", jnp.bfloat16, 256, None),     # ... up to 128
    ("cpu", jnp.bfloat16, 64, None), ("tpu", jnp.bfloat16, 64, None),
])
def test_softmax_implementation_per_backend(backend, dtype, head_dim, expected):
  assert attention.softmax_implementation(dtype, head_dim, backend) == expected


def test_softmax_attention_falls_back_to_xla_where_cudnn_refuses(monkeypatch):
  # On this CPU machine cuDNN refuses at trace time; the result must be XLA's.
  q, k, v, _ = _inputs()
  v, mask = v[..., :M_DIM], _mask()
  xla = attention.softmax_attention(q, k, v, key_mask=mask)
  calls = []
  real = jax.nn.dot_product_attention

  def recording(*args, implementation=None, **kwargs):
    calls.append(implementation)
    return real(*args, implementation=implementation, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
  monkeypatch.setattr(attention, "softmax_implementation", lambda *a, **k: "cudnn")
  out = attention.softmax_attention(q, k, v, key_mask=mask)
  assert calls == ["cudnn", None]
  np.testing.assert_array_equal(np.asarray(out), np.asarray(xla))

def _all_shapes(jaxpr):
  """Shapes of every intermediate in a jaxpr, sub-jaxprs (scan, pjit, ...) included."""
  for eqn in all_eqns(jaxpr):
    for var in eqn.outvars:
      yield tuple(getattr(var.aval, "shape", ()))


def _has_n_by_n(shapes, n):
  return [s for s in shapes if list(s).count(n) >= 2]


def test_astro_attention_never_builds_n_by_n():
  n = 97  # a size no other dimension has
  q = jnp.ones((B, H, n, M_DIM))
  v = jnp.ones((B, H, n, D_H))
  r = jnp.ones((H, n, M_DIM))
  mask = jnp.ones((B, n), bool)

  def loss(q, k, v):
    return attention.astro_attention(q, k, v, r, key_mask=mask).sum()

  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, q, v).jaxpr
  assert not _has_n_by_n(_all_shapes(jaxpr), n)
  # The check itself can fail: softmax attention does build [B, H, N, N].
  jaxpr = jax.make_jaxpr(
      lambda q, k, v: attention.softmax_attention(q, k, v, key_mask=mask))(q, q, q).jaxpr
  assert _has_n_by_n(_all_shapes(jaxpr), n)


def test_distance_positions_formula():
  r = np.asarray(position.distance_positions(2, 5, 3, scale=2.0))
  p, c = np.arange(5) / 4, np.arange(3) / 2
  expected = np.exp(-2.0 * np.abs(p[:, None] - c[None, :]))
  assert r.shape == (2, 5, 3)
  np.testing.assert_allclose(r[0], expected, rtol=1e-6)
  np.testing.assert_allclose(r[1], expected, rtol=1e-6)


def test_projected_positions_formula():
  e = jax.random.normal(jax.random.key(0), (2, 3, 6))  # [H, m, N]
  r = np.asarray(position.projected_positions(e, scale=5.0))
  p = np.arange(6) / 5
  kernel = np.exp(-5.0 * np.abs(p[:, None] - p[None, :]))
  e64 = np.asarray(e, np.float64)
  for h in range(2):
    np.testing.assert_allclose(r[h], e64[h].T @ (e64[h] @ kernel @ e64[h].T), rtol=1e-5)


def test_single_token_segment_positions_are_finite():
  assert np.all(np.isfinite(position.distance_kernel(1, 2.0)))
  assert np.all(np.isfinite(np.asarray(position.distance_positions(1, 1, 1, 2.0))))


@pytest.mark.parametrize("core", ["astro", "linear", "softmax"])
def test_a_row_with_every_key_masked_has_finite_zero_gradients(core):
  q, k, v, r = _inputs()
  mask = jnp.asarray(np.ones((B, N), bool)).at[1].set(False)  # example 1: no real token

  def loss(q, k, v):
    if core == "astro":
      out = attention.astro_attention(q, k, v, r, key_mask=mask)
    elif core == "linear":
      out = attention.linear_attention(q, k, v, key_mask=mask)
    else:
      out = attention.softmax_attention(q, k, v, key_mask=mask)
    return jnp.sum(out ** 2)

  grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  for g in grads:
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1], 0.0)
    assert np.any(g[0] != 0)
