"""The recurrent classifier: contract, config errors, and equal gradients across backprop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmaat_jax.models import ConfigError, ModelConfig, build_model
from rmaat_jax.models.classifier import split_segments

TINY = dict(
    vocab_size=13, num_classes=3, seq_len=24, num_segments=4, num_memory_tokens=2,
    emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32, dropout_rate=0.2,
    attention="astro", position="projected", position_scale=2.0, alpha=0.25,
    retention="paper", backprop="bptt", pool="memory", dual_encoder=False)


def _tokens(cfg, batch=3, seed=1):
  shape = (batch, 2, cfg["seq_len"]) if cfg["dual_encoder"] else (batch, cfg["seq_len"])
  tokens = jax.random.randint(jax.random.key(seed), shape, 1, cfg["vocab_size"])
  # Right padding of different lengths, the last segment of one example all padding.
  lengths = np.array([cfg["seq_len"], cfg["seq_len"] - 7, 4])[:batch]
  pad = np.arange(cfg["seq_len"]) >= lengths.reshape((batch,) + (1,) * (len(shape) - 1))
  return jnp.where(pad, 0, tokens).astype(jnp.int32)


def _init(cfg, tokens):
  model = build_model(cfg)
  return jax.jit(lambda key: model.init({"params": key}, tokens))(jax.random.key(0))


def _loss_and_grads(cfg, tokens, params):
  model = build_model(cfg)
  labels = jnp.arange(tokens.shape[0]) % cfg["num_classes"]

  def loss(params):
    logits = model.apply({"params": params}, tokens, train=True,
                         rngs={"dropout": jax.random.key(7)})
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

  return jax.jit(jax.value_and_grad(loss))(params)


def _assert_grads_close(grads, ref, rtol=1e-5):
  flat, flat_ref = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)
  total = np.sqrt(sum(float(jnp.sum(g ** 2)) for g in flat_ref))
  err = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(flat, flat_ref, strict=True)))
  assert err <= rtol * total, (err, total)
  # Per leaf too, except leaves whose true gradient is zero up to rounding (softmax's key
  # bias: softmax is shift-invariant), where a relative error means nothing.
  paths = jax.tree_util.tree_flatten_with_path(ref)[0]
  for (path, b), a in zip(paths, flat, strict=True):
    norm = float(jnp.linalg.norm(b))
    if norm > 1e-6 * total:
      assert float(jnp.linalg.norm(a - b)) <= rtol * norm, (jax.tree_util.keystr(path))


CASES = {
    "astro": {},
    "softmax": {"attention": "softmax"},
    "astro-dual": {"dual_encoder": True},
    "softmax-dual": {"attention": "softmax", "dual_encoder": True},
    "linear-mean-streaming": {"attention": "linear", "pool": "mean", "retention": "streaming"},
    "astro-distance-sigmoid": {"position": "distance", "hebbian_sigmoid": True,
                               "retention": "none", "pool": "mean"},
    "one-segment": {"num_segments": 1},
}


@pytest.mark.parametrize("case", list(CASES))
def test_backprop_modes_give_same_loss_and_gradients(case):
  cfg = {**TINY, **CASES[case]}
  tokens = _tokens(cfg)
  params = _init(cfg, tokens)["params"]
  ref_loss, ref_grads = _loss_and_grads(cfg, tokens, params)
  assert np.isfinite(float(ref_loss))
  for mode in ("remat", "amrb"):
    loss, grads = _loss_and_grads({**cfg, "backprop": mode}, tokens, params)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    _assert_grads_close(grads, ref_grads)


def test_dropout_is_active_and_keyed():
  cfg = {**TINY, "backprop": "amrb"}
  tokens = _tokens(cfg)
  model = build_model(cfg)
  variables = model.init({"params": jax.random.key(0)}, tokens)
  run = lambda seed: model.apply(variables, tokens, train=True,  # noqa: E731
                                 rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(run(1), run(1))
  assert not np.allclose(run(1), run(2))
  eval_logits = model.apply(variables, tokens, train=False)
  np.testing.assert_array_equal(eval_logits, model.apply(variables, tokens))


def test_contract_shapes_and_parameters():
  cfg = {**TINY, "dual_encoder": True}
  tokens = _tokens(cfg)
  model = build_model(cfg)
  variables = model.init({"params": jax.random.key(0)}, tokens, train=False)
  logits = model.apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
  assert logits.shape == (3, cfg["num_classes"]) and logits.dtype == jnp.float32
  params = variables["params"]
  # Learned E per layer [H, m, N] for the projected positions; memory [M, d].
  assert params["astro_positions"]["e_0"].shape == (2, 8, 2 + 6)
  assert params["memory_init"].shape == (2, 16)
  assert params["segment_encoder"]["token_embedding"]["embedding"].shape == (13, 16)


def test_memory_carries_information_across_segments():
  """Changing only the first segment changes the logits (read from the last segment)."""
  cfg = {**TINY, "retention": "none"}
  tokens = _tokens(cfg, batch=1)
  model = build_model(cfg)
  variables = model.init({"params": jax.random.key(0)}, tokens)
  changed = tokens.at[0, 0].set((tokens[0, 0] % 12) + 1)
  assert not np.allclose(model.apply(variables, tokens), model.apply(variables, changed))


def test_padding_id_is_masked_and_minus_one_disables_it():
  cfg = {**TINY, "pad_id": -1, "seq_len": 8, "num_segments": 2}
  model = build_model(cfg)
  tokens = jnp.zeros((1, 8), jnp.int32)  # every 0 is a real token (a black pixel)
  variables = model.init({"params": jax.random.key(0)}, tokens)
  assert np.all(np.isfinite(model.apply(variables, tokens)))


def test_split_segments_is_segment_major():
  tokens = jnp.arange(12).reshape(2, 6)
  np.testing.assert_array_equal(split_segments(tokens, 3)[1], [[2, 3], [8, 9]])


@pytest.mark.parametrize("override, field", [
    ({"seq_len": 25}, "model.seq_len"),
    ({"num_segments": 0}, "model.num_segments"),
    ({"attention": "flash"}, "model.attention"),
    ({"backprop": "truncated"}, "model.backprop"),
    ({"retention": "always"}, "model.retention"),
    ({"position": "rope"}, "model.position"),
    ({"pool": "max"}, "model.pool"),
    ({"emb_dim": 15}, "model.emb_dim"),
    ({"dropout_rate": 1.0}, "model.dropout_rate"),
    ({"num_layers": 2.5}, "model.num_layers"),
    ({"pad_id": 13}, "model.pad_id"),
    ({"num_segmnets": 4}, "model.num_segmnets"),
])
def test_invalid_config_names_the_field(override, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    build_model({**TINY, **override})


def test_missing_field_is_named():
  cfg = dict(TINY)
  del cfg["vocab_size"]
  with pytest.raises(ConfigError, match=r"model\.vocab_size"):
    ModelConfig.from_config(cfg)


def test_wrong_token_shape_is_a_clear_error():
  model = build_model(TINY)
  with pytest.raises(ValueError, match=r"\[B, seq_len\] = \[B, 24\]"):
    model.init({"params": jax.random.key(0)}, jnp.zeros((2, 23), jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    model.init({"params": jax.random.key(0)}, jnp.zeros((2, 24), jnp.float32))
