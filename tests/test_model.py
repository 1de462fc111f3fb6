"""The recurrent classifier: contract, config errors, and equal gradients across backprop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_walk import all_eqns

from rmaat_jax.models import ConfigError, ModelConfig, build_model
from rmaat_jax.models.classifier import split_segments

TINY = dict(
    vocab_size=13, num_classes=3, pad_id=0, seq_len=24, num_segments=4, num_memory_tokens=2,
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
    # Skipping empty segments: the _tokens examples end in 1 and 3 padding-only segments.
    "astro-dual-skip-empty": {"dual_encoder": True, "skip_empty_segments": True},
    "softmax-dual-mean-skip-empty": {"attention": "softmax", "dual_encoder": True,
                                     "pool": "mean", "skip_empty_segments": True},
    # rbg dropout bits (what "auto" picks on GPU/TPU): the replay must redraw the same masks.
    "linear-mean-streaming-rbg": {"attention": "linear", "pool": "mean",
                                  "retention": "streaming", "dropout_rng": "rbg"},
    # (and AMRB replaying whole segments, the paper's replay)
    "astro-distance-sigmoid": {"position": "distance", "hebbian_sigmoid": True,
                               "retention": "none", "pool": "mean", "amrb_replay": "segment"},
    "one-segment": {"num_segments": 1},
    # Pre-LN blocks (the residual stream, memory rows included, passes unnormalised) with
    # the diagnostic whose backward scales dL/dmem by other factors than the forward.
    "pre-ln-backward-none": {"block_layout": "pre_ln", "retention_backward": "none"},
    # The memory-cutting control: every segment reads mem0, whose gradient sums over segments.
    "reset-skip-empty": {"retention": "reset", "skip_empty_segments": True},
}


@pytest.mark.parametrize("case", list(CASES))
def test_backprop_modes_give_same_loss_and_gradients(case):
  # Layers repeat the same code: "astro" runs TINY's two, the other cases one (compiles
  # dominate this test's time).
  cfg = {**TINY, **({} if case == "astro" else {"num_layers": 1}), **CASES[case]}
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
  variables = _init(cfg, tokens)

  def runner(rng):
    model = build_model({**cfg, "dropout_rng": rng})
    return jax.jit(lambda seed: model.apply(variables, tokens, train=True,
                                            rngs={"dropout": jax.random.key(seed)}))

  run, run_rbg = runner("auto"), runner("rbg")
  np.testing.assert_array_equal(run(1), run(1))
  np.testing.assert_array_equal(run_rbg(1), run_rbg(1))
  assert not np.allclose(run(1), run(2))
  assert not np.allclose(run_rbg(1), run_rbg(2))
  # "auto" is threefry on CPU (the step's key itself, no RngBitGenerator), rbg elsewhere.
  auto = "threefry" if jax.default_backend() == "cpu" else "rbg"
  other = {"threefry": "rbg", "rbg": "threefry"}[auto]
  np.testing.assert_array_equal(run(1), runner(auto)(1))
  assert not np.allclose(run(1), runner(other)(1))
  model = build_model(cfg)
  eval_logits = jax.jit(lambda: model.apply(variables, tokens, train=False))()
  np.testing.assert_array_equal(eval_logits, jax.jit(lambda: model.apply(variables, tokens))())


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


# Each retention once, "reset" with both block layouts (the other two share one each).
@pytest.mark.parametrize("retention, layout", [("paper", "post_ln"), ("none", "pre_ln"),
                                               ("reset", "post_ln"), ("reset", "pre_ln")])
def test_only_reset_cuts_the_memory_between_segments(retention, layout):
  """Changing every token of the first segment changes the logits (read from the last
  segment) through the memory, unless "reset" starts every segment from mem0."""
  cfg = {**TINY, "retention": retention, "block_layout": layout}
  tokens = _tokens(cfg, batch=2)
  model = build_model(cfg)
  variables = _init(cfg, tokens)
  apply = jax.jit(lambda t: model.apply(variables, t))
  segment = cfg["seq_len"] // cfg["num_segments"]
  changed = tokens.at[:, :segment].set((tokens[:, :segment] % 12) + 1)
  difference = float(jnp.abs(apply(tokens) - apply(changed)).max())
  if retention == "reset":
    assert difference == 0.0
  else:
    assert difference > 1e-4


def test_retention_backward_changes_the_gradient_not_the_function():
  cfg = {**TINY, "num_layers": 1}
  tokens = _tokens(cfg)
  params = _init(cfg, tokens)["params"]
  loss, grads = _loss_and_grads(cfg, tokens, params)
  diag_loss, diag_grads = _loss_and_grads({**cfg, "retention_backward": "none"}, tokens, params)
  np.testing.assert_allclose(float(diag_loss), float(loss), rtol=1e-6)
  # Only gradients that pass through a memory boundary change: the head's do not (up to
  # rounding: the two programs compile differently).
  np.testing.assert_allclose(diag_grads["head_out"]["kernel"], grads["head_out"]["kernel"],
                             rtol=1e-5, atol=1e-7)
  assert not np.allclose(diag_grads["memory_init"], grads["memory_init"], rtol=1e-3)


def test_padding_id_is_masked_and_minus_one_disables_it():
  cfg = {**TINY, "seq_len": 8, "num_segments": 2}
  tokens = jnp.array([[3, 5, 0, 0, 7, 0, 0, 0]], jnp.int32)
  variables = _init(cfg, tokens)
  apply_masked = jax.jit(lambda v: build_model({**cfg, "pad_id": 0}).apply(v, tokens))
  masked = apply_masked(variables)
  # pad_id = -1: every 0 is a real token (a black pixel), attended to like any other.
  unmasked = build_model({**cfg, "pad_id": -1}).apply(variables, tokens)
  assert np.all(np.isfinite(unmasked))
  assert not np.allclose(masked, unmasked, rtol=1e-3)
  # With padding masked, changing the embedding of id 0 changes nothing.
  moved = jax.tree_util.tree_map(lambda x: x, variables)
  table = moved["params"]["segment_encoder"]["token_embedding"]["embedding"]
  moved["params"]["segment_encoder"]["token_embedding"]["embedding"] = table.at[0].add(1.0)
  np.testing.assert_allclose(apply_masked(moved), masked, rtol=1e-6)


@pytest.mark.parametrize("pool", ["memory", "mean"])
def test_skipped_segments_act_as_if_the_input_were_shorter(pool):
  # With retention "none", a 2-segment input padded to 4 segments and skipping the empty
  # ones gives the logits of the same weights on a 2-segment model (same segment length).
  cfg = {**TINY, "retention": "none", "pool": pool, "skip_empty_segments": True}
  short_cfg = {**cfg, "seq_len": 12, "num_segments": 2}
  tokens = _tokens(cfg, batch=3)[:, :12].at[1, 9:].set(0)  # lengths 12, 9, 4
  padded = jnp.pad(tokens, ((0, 0), (0, 12)))
  variables = _init(cfg, padded)
  long_logits = build_model(cfg).apply(variables, padded)
  np.testing.assert_allclose(long_logits, build_model(short_cfg).apply(variables, tokens),
                             rtol=1e-5, atol=1e-6)
  # Without skipping, the empty segments change what the head reads.
  run_all = build_model({**cfg, "skip_empty_segments": False}).apply(variables, padded)
  assert not np.allclose(run_all, long_logits, rtol=1e-3)


def test_skip_has_no_effect_without_a_padding_id():
  cfg = {**TINY, "pad_id": -1}
  tokens = _tokens(cfg)
  variables = _init(cfg, tokens)
  np.testing.assert_array_equal(
      build_model({**cfg, "skip_empty_segments": True}).apply(variables, tokens),
      build_model(cfg).apply(variables, tokens))


def test_memory_starts_at_the_scale_of_the_token_inputs():
  cfg = {**TINY, "emb_dim": 64, "num_heads": 4, "num_memory_tokens": 16}
  params = _init(cfg, _tokens(cfg))["params"]
  memory = np.linalg.norm(params["memory_init"], axis=-1).mean()
  tokens = np.linalg.norm(
      params["segment_encoder"]["token_embedding"]["embedding"], axis=-1).mean()
  assert 0.5 < memory / tokens < 2.0, (memory, tokens)


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
    ({"block_layout": "sandwich"}, "model.block_layout"),
    ({"retention": "reset", "retention_backward": "none"}, "model.retention_backward"),
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


def _scan_carries(jaxpr) -> list[tuple[tuple[int, ...], jnp.dtype]]:
  """(shape, dtype) of every lax.scan carry in a jaxpr, nested scans included."""
  found = []
  for eqn in all_eqns(jaxpr):
    if eqn.primitive.name == "scan":
      start = eqn.params["num_consts"]
      avals = eqn.params["jaxpr"].in_avals[start:start + eqn.params["num_carry"]]
      found += [(tuple(a.shape), a.dtype) for a in avals]
  return found


@pytest.mark.parametrize("backprop", ["bptt", "amrb"])
def test_bfloat16_computes_in_bf16_and_accumulates_gradients_in_float32(backprop):
  cfg = {**TINY, "backprop": backprop, "num_segments": 6, "seq_len": 36}
  tokens = _tokens(cfg)
  params = _init(cfg, tokens)["params"]

  def grad_fn(dtype):
    model = build_model(cfg, dtype)
    return jax.grad(lambda p: jnp.sum(model.apply(
        {"params": p}, tokens, train=True, rngs={"dropout": jax.random.key(1)}) ** 2))

  # The segment's matrix products run in bf16 (the head's, outside the loop, in float32) ...
  forward = jax.make_jaxpr(lambda p: build_model(cfg, jnp.bfloat16).apply(
      {"params": p}, tokens))(params)
  dots = [e.outvars[0].aval for e in all_eqns(forward.jaxpr)
          if e.primitive.name == "dot_general"]
  assert sum(a.dtype == jnp.bfloat16 for a in dots) >= 6 * TINY["num_layers"], dots
  # ... while the per-segment weight gradients are summed in float32: no scan carries a
  # bf16 array of a parameter's shape (weights cast to bf16 outside the loop would).
  # (block parameters are stacked over layers: [L, ...])
  leaves = jax.tree_util.tree_leaves(params["segment_encoder"])
  param_shapes = ({tuple(x.shape) for x in leaves}
                  | {(TINY["num_layers"],) + tuple(x.shape) for x in leaves})
  carries = _scan_carries(jax.make_jaxpr(grad_fn(jnp.bfloat16))(params).jaxpr)
  assert any(shape in param_shapes for shape, _ in carries)
  assert not [c for c in carries if c[0] in param_shapes and c[1] != jnp.float32], carries
  if backprop == "bptt":
    return  # bptt and amrb gradients are equal (above); the numbers once, through AMRB
  grads = jax.jit(grad_fn(jnp.bfloat16))(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
  # The same gradient as float32 compute, to bf16 accuracy (as a whole: single small
  # leaves, like a key bias, carry larger relative errors).
  ref = jax.tree_util.tree_leaves(jax.jit(grad_fn(jnp.float32))(params))
  err = sum(float(jnp.sum((a - b) ** 2))
            for a, b in zip(jax.tree_util.tree_leaves(grads), ref, strict=True))
  assert np.sqrt(err / sum(float(jnp.sum(b ** 2)) for b in ref)) < 0.03


def _recorded_masks(cfg, run):
  """Runs `run()` with every Dropout call reporting its drop mask to the host: a list of
  (shape, bytes), one per call executed (forward, and AMRB's replay under grad)."""
  import flax.linen as nn

  from rmaat_jax.models.dropout import Dropout

  masks = []

  def record(mask):
    masks.append((mask.shape, np.asarray(mask).tobytes()))

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, Dropout) and context.method_name == "__call__":
      jax.debug.callback(record, out == 0)
    return out

  with nn.intercept_methods(interceptor):
    jax.block_until_ready(run())
  jax.effects_barrier()
  return masks


def test_dropout_masks_differ_by_segment_layer_site_and_step_and_amrb_replays_them():
  cfg = {**TINY, "pad_id": -1, "num_segments": 3, "seq_len": 18, "dropout_rate": 0.5,
         "backprop": "amrb", "retention": "none"}
  tokens = _tokens({**cfg, "pad_id": 0})  # no padding id: no zero from masking
  variables = _init(cfg, tokens)
  model = build_model(cfg)

  def forward(seed):
    return lambda: jax.jit(lambda v: model.apply(v, tokens, train=True, rngs={
        "dropout": jax.random.key(seed)}))(variables)

  step_1 = _recorded_masks(cfg, forward(1))
  sites = cfg["num_segments"] * cfg["num_layers"] * 3  # attention, MLP hidden, MLP output
  assert len(step_1) == sites
  assert len(set(step_1)) == sites  # every segment, layer and site draws its own mask
  assert not set(step_1) & set(_recorded_masks(cfg, forward(2)))  # and every step

  def grad():
    def loss(params):
      return jnp.sum(model.apply({"params": params}, tokens, train=True,
                                 rngs={"dropout": jax.random.key(1)}) ** 2)
    return jax.jit(jax.grad(loss))(variables["params"])

  with_replay = _recorded_masks(cfg, grad)
  # The forward's masks, then the replay's: per segment blocks 0..L-2 again and each block
  # once more under vjp. The replay draws no mask the forward did not.
  replays = cfg["num_segments"] * (2 * cfg["num_layers"] - 1) * 3
  assert len(with_replay) == sites + replays
  assert set(with_replay) == set(step_1)
