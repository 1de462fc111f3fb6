"""The PyTorch port (experiments/torch_port/) computes the JAX model's function.

Both frameworks run in float32 (JAX's default; torch modules are built with
dtype=torch.float32), so tolerances cover float32 rounding only: logits to rtol 1e-4, every
gradient leaf to rtol 1e-4 plus an absolute slack of 1e-4 x the leaf's largest entry
(entries near zero carry cancellation error of the leaf's scale; see assert_trees_close).
Measured differences are ~1e-6 relative, so a real mismatch fails: the exact (erf) GELU
instead of Flax's tanh form fails every parity test, a missing retention factor fails
`test_tolerance_detects_a_wrong_model`. (torch's LayerNorm epsilon 1e-5 instead of Flax's
1e-6 is below float32 tolerance at these activation scales and is not detected.)

JAX compiles dominate the run time, so each (case, backprop) JAX result is computed once
per module and shared by every test that needs it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest
import torch

from experiments.torch_port.memory_meter import SavedTensorMeter
from experiments.torch_port.model import build_torch_model, torch_grads_as_jax_tree
from rmaat_jax.models import ModelConfig, build_model

SEGMENT_LEN, BATCH = 16, 2
BASE = dict(vocab_size=23, num_classes=3, pad_id=0, dual_encoder=False,
            emb_dim=16, num_heads=2, num_layers=1,
            mlp_dim=32, dropout_rate=0.1)
# Each case covers some options once; together: every attention kind, both positions,
# Hebbian sigmoid, memory tokens M > 1, padding (pad_id) and no padding (pad_id=-1), both
# pools, all retention modes, both block layouts, the dual encoder, skipped empty segments
# and 2-3 segments.
CASES = {
    "astro": dict(attention="astro", position="projected", num_memory_tokens=2,
                  num_layers=2, num_segments=3, pool="memory", retention="paper"),
    "softmax": dict(attention="softmax", num_segments=2, pool="mean", retention="stretched",
                    skip_empty_segments=True),
    "linear": dict(attention="linear", num_segments=2, pad_id=-1, retention="none"),
    "astro_distance_dual": dict(attention="astro", position="distance",
                                hebbian_sigmoid=True, dual_encoder=True, num_segments=2,
                                retention="streaming", skip_empty_segments=True),
    "astro_pre_ln": dict(attention="astro", num_layers=2, num_segments=3, retention="paper",
                         block_layout="pre_ln"),
}


def config(case: str, backprop: str, amrb_replay: str = "block") -> ModelConfig:
  fields = {**BASE, **CASES[case]}
  fields["seq_len"] = SEGMENT_LEN * fields["num_segments"]
  return ModelConfig.from_config({**fields, "backprop": backprop, "amrb_replay": amrb_replay})


def inputs(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  shape = (BATCH, 2, cfg.seq_len) if cfg.dual_encoder else (BATCH, cfg.seq_len)
  tokens = rng.integers(1, cfg.vocab_size, shape).astype(np.int32)
  if cfg.pad_id >= 0:
    # Example 0 ends in padding that covers all of its last segment and part of the one
    # before (the "mean" pool then averages the memory rows only).
    tokens[0, ..., cfg.seq_len - SEGMENT_LEN - 5:] = cfg.pad_id
  labels = np.arange(BATCH) % cfg.num_classes
  return tokens, labels


@functools.cache
def jax_params(case: str) -> dict:
  """Random weights in the Flax params tree's structure (shapes via eval_shape: no compile).

  Not Flax's initialisers: biases and LayerNorm parameters are non-zero too, so a
  misplaced bias or scale cannot hide behind a zero or one.
  """
  cfg = config(case, "bptt")
  tokens, _ = inputs(cfg)
  shapes = jax.eval_shape(lambda key: build_model(cfg).init({"params": key}, tokens),
                          jax.random.key(0))["params"]
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(1)
  values = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    fan_in = leaf.shape[0] if "kernel" in name else 1
    if "'out'" in name and "kernel" in name:  # DenseGeneral (H, d_h) -> d
      fan_in = leaf.shape[0] * leaf.shape[1]
    value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape)
    if "scale" in name:
      value = 1.0 + 0.1 * value
    values.append(value.astype(np.float32))
  return jax.tree_util.tree_unflatten(treedef, values)


@functools.cache
def jax_result(case: str, backprop: str) -> tuple[np.ndarray, float, dict]:
  """(logits, loss, grads) of the Flax model, deterministic (train=False)."""
  cfg = config(case, backprop)
  model = build_model(cfg)
  tokens, labels = inputs(cfg)

  def loss_fn(params):
    logits = model.apply({"params": params}, tokens, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      jax_params(case))
  return np.asarray(logits), float(loss), jax.tree_util.tree_map(np.asarray, grads)


def torch_result(case: str, backprop: str, amrb_replay: str = "block"
                 ) -> tuple[np.ndarray, float, dict]:
  cfg = config(case, backprop, amrb_replay)
  model = build_torch_model(cfg, jax_params(case), dtype=torch.float32)
  tokens, labels = inputs(cfg)
  logits = model(tokens).detach().numpy()
  loss = float(model.loss_and_backward(tokens, labels))
  return logits, loss, torch_grads_as_jax_tree(model)


def assert_trees_close(actual: dict, expected: dict, rtol: float = 1e-4) -> None:
  """Leaf by leaf: rtol, plus an absolute slack of rtol x the leaf's largest entry.

  A leaf whose exact gradient is zero (softmax attention's key bias: a shift q.b is the
  same for every key) holds only rounding noise; its slack is floored at 1e-3 of the
  largest gradient in the tree, which is still far below any real error.
  """
  flat_actual = dict(jax.tree_util.tree_leaves_with_path(actual))
  flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
  assert flat_actual.keys() == flat_expected.keys()
  tree_scale = max(float(np.abs(leaf).max()) for leaf in flat_expected.values())
  assert tree_scale > 0, "all gradients are zero: nothing is checked"
  for path, want in flat_expected.items():
    scale = max(float(np.abs(want).max()), 1e-3 * tree_scale)
    np.testing.assert_allclose(flat_actual[path], want, rtol=rtol, atol=rtol * scale,
                               err_msg=jax.tree_util.keystr(path))


# JAX's own bptt == amrb is tested in test_model.py; each JAX compile costs seconds, so the
# cases beyond astro and softmax are compared in the default mode, AMRB, only.
JAX_RUNS = [("astro", "bptt"), ("astro", "amrb"), ("softmax", "bptt"), ("softmax", "amrb"),
            ("linear", "amrb"), ("astro_distance_dual", "amrb"), ("astro_pre_ln", "amrb")]


@pytest.mark.parametrize("case,backprop", JAX_RUNS)
def test_logits_loss_and_grads_match_jax(case, backprop):
  want_logits, want_loss, want_grads = jax_result(case, backprop)
  logits, loss, grads = torch_result(case, backprop)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-6)
  assert loss == pytest.approx(want_loss, rel=1e-5)
  assert_trees_close(grads, want_grads)


@pytest.mark.parametrize("mode,replay", [("amrb", "block"), ("amrb", "segment"),
                                         ("remat", "block")])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_replay_modes_give_bptt_grads(case, mode, replay):
  _, bptt_loss, bptt_grads = torch_result(case, "bptt")
  _, loss, grads = torch_result(case, mode, replay)
  assert loss == bptt_loss
  assert_trees_close(grads, bptt_grads, rtol=1e-5)


def _train_mode_grads(backprop: str, amrb_replay: str = "block") -> tuple[float, dict]:
  cfg = config("astro", backprop, amrb_replay)
  model = build_torch_model(cfg, jax_params("astro")).train()  # dropout 0.1 active
  tokens, labels = inputs(cfg)
  torch.manual_seed(123)  # the step's dropout seed
  loss = float(model.loss_and_backward(tokens, labels))
  return loss, torch_grads_as_jax_tree(model)


@pytest.mark.parametrize("replay", ["block", "segment"])
def test_amrb_replays_the_forward_dropout_masks(replay):
  # "astro" has 2 layers: the block replay must restore the generator before each block.
  bptt_loss, bptt_grads = _train_mode_grads("bptt")
  amrb_loss, amrb_grads = _train_mode_grads("amrb", replay)
  eval_loss = torch_result("astro", "bptt")[1]
  assert bptt_loss != pytest.approx(eval_loss, rel=1e-3)  # dropout really was on
  assert amrb_loss == bptt_loss
  assert_trees_close(amrb_grads, bptt_grads, rtol=1e-5)


def test_tolerance_detects_a_wrong_model():
  # Negative control: a model without retention factors differs from the JAX one by far
  # more than the tolerance used above.
  want_logits = jax_result("astro", "bptt")[0]
  cfg = dataclasses.replace(config("astro", "bptt"), retention="none")
  logits = build_torch_model(cfg, jax_params("astro"))(inputs(cfg)[0]).detach().numpy()
  assert not np.allclose(logits, want_logits, rtol=1e-4, atol=1e-6)


def _saved_bytes(backprop: str, num_segments: int) -> int:
  cfg = ModelConfig.from_config({**BASE, "emb_dim": 32, "mlp_dim": 64, "backprop": backprop,
                                 "num_segments": num_segments, "seq_len": 32 * num_segments})
  model = build_torch_model(cfg)
  tokens = np.random.default_rng(1).integers(1, cfg.vocab_size, (4, cfg.seq_len))
  with SavedTensorMeter(model.parameters()) as meter:
    model.loss_and_backward(tokens, np.zeros(4, np.int64))
  assert meter.live_bytes == 0  # backward released everything it saved
  return meter.peak_bytes


def test_torch_amrb_saves_less_than_bptt():
  bptt_2, bptt_8 = _saved_bytes("bptt", 2), _saved_bytes("bptt", 8)
  amrb_2, amrb_8 = _saved_bytes("amrb", 2), _saved_bytes("amrb", 8)
  assert bptt_8 >= 3.5 * bptt_2  # BPTT keeps every segment's activations
  assert amrb_8 <= 1.1 * amrb_2  # AMRB: one segment plus a [T, B, M, d] buffer
  assert bptt_8 >= 4 * amrb_8
