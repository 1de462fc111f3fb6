"""A numeric oracle for the whole classifier's gradient, outside every custom VJP.

The other gradient tests compare backprop modes with each other, and all of them run the
same custom VJPs (dropout, GELU, LayerNorm, elu + 1, Dense, AMRB's segment replay): a bug
they share would be invisible there. Here the loss itself is differentiated by central
finite differences in float64 along random directions in parameter space, and every
backprop mode's `jax.grad` must agree. float64 only inside this test (`jax.enable_x64`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmaat_jax.models import build_model

TINY = dict(vocab_size=11, num_classes=3, pad_id=0, dual_encoder=False, seq_len=18,
            num_segments=3, num_memory_tokens=2, emb_dim=8, num_heads=2, num_layers=2,
            mlp_dim=16, dropout_rate=0.0, retention="paper", pool="memory")
KINDS = {"astro": {}, "softmax": {"attention": "softmax"}, "linear": {"attention": "linear"}}
# Every backprop mode, and AMRB with both replays (block by block, whole segment).
MODES = [("bptt", "block"), ("remat", "block"), ("amrb", "block"), ("amrb", "segment")]
DIRECTIONS, STEP = 3, 1e-5


def _tokens(batch: int = 3) -> np.ndarray:
  tokens = np.random.default_rng(0).integers(1, TINY["vocab_size"], (batch, TINY["seq_len"]))
  tokens[1, -8:] = 0  # padding over the last segment and part of the one before
  return tokens.astype(np.int32)


def _loss_fn(cfg: dict):
  model = build_model(cfg, jnp.float64)
  tokens, labels = _tokens(), np.arange(3) % cfg["num_classes"]

  def loss(params):
    logits = model.apply({"params": params}, tokens, train=True,
                         rngs={"dropout": jax.random.key(0)})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  return loss


@functools.cache
def _case(kind: str):
  """(float64 parameters, random unit directions, central differences along them)."""
  with jax.enable_x64(True):
    cfg = {**TINY, **KINDS[kind], "backprop": "bptt"}
    model = build_model(cfg, jnp.float64)
    params = model.init({"params": jax.random.key(1)}, _tokens())["params"]
    # Flax initialises biases and LayerNorm at 0 / 1: perturb every leaf so that no term of
    # the gradient hides behind a zero.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(2)
    params = treedef.unflatten([np.asarray(x, np.float64) + 0.1 * rng.normal(size=x.shape)
                                for x in leaves])
    loss = jax.jit(_loss_fn(cfg))
    directions, differences = [], []
    for _ in range(DIRECTIONS):
      v = [rng.normal(size=x.shape) for x in leaves]
      norm = np.sqrt(sum(float(np.sum(x * x)) for x in v))
      v = treedef.unflatten([x / norm for x in v])
      plus = jax.tree_util.tree_map(lambda p, d: p + STEP * d, params, v)
      minus = jax.tree_util.tree_map(lambda p, d: p - STEP * d, params, v)
      directions.append(v)
      differences.append((float(loss(plus)) - float(loss(minus))) / (2 * STEP))
    return params, directions, differences


@pytest.mark.parametrize("backprop, replay", MODES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_gradient_matches_central_differences_in_float64(kind, backprop, replay):
  params, directions, differences = _case(kind)
  with jax.enable_x64(True):
    cfg = {**TINY, **KINDS[kind], "backprop": backprop, "amrb_replay": replay}
    grads = jax.jit(jax.grad(_loss_fn(cfg)))(params)
    assert all(g.dtype == jnp.float64 for g in jax.tree_util.tree_leaves(grads))
    for v, numeric in zip(directions, differences, strict=True):
      analytic = sum(float(jnp.vdot(g, d)) for g, d in
                     zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(v),
                         strict=True))
      # float64 central differences: truncation ~STEP**2, rounding ~1e-16 / STEP.
      assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), (analytic, numeric)


def test_the_oracle_detects_a_wrong_gradient():
  # Negative control: the same check on a gradient with one term dropped (the memory's
  # path through the retention factor cut by stop_gradient) must fail.
  params, directions, differences = _case("astro")
  with jax.enable_x64(True):
    cfg = {**TINY, "backprop": "bptt", "retention_backward": "none"}
    grads = jax.jit(jax.grad(_loss_fn(cfg)))(params)
    errors = []
    for v, numeric in zip(directions, differences, strict=True):
      analytic = sum(float(jnp.vdot(g, d)) for g, d in
                     zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(v),
                         strict=True))
      errors.append(abs(analytic - numeric) / abs(numeric))
    assert max(errors) > 1e-3, errors
