"""Compiled memory of a jitted training gradient: AMRB flat in T, BPTT linear in T."""

import pytest

from rmaat_jax.memory import gradient_step_profile

BASE = dict(vocab_size=20, num_classes=2, pad_id=0, dual_encoder=False,
            num_memory_tokens=1, emb_dim=32, num_heads=2,
            num_layers=1, mlp_dim=64, dropout_rate=0.1, attention="astro", retention="paper",
            # what "auto" picks on a GPU; CPU compilation stands in for one (docs/method.md 5.1)
            dropout_rng="rbg")
SEGMENT_LEN, BATCH = 64, 4


def _temp_bytes(backprop, num_segments, num_layers=1):
  cfg = {**BASE, "seq_len": SEGMENT_LEN * num_segments, "num_segments": num_segments,
         "backprop": backprop, "num_layers": num_layers}
  return gradient_step_profile(cfg, BATCH)["temp"]


@pytest.fixture(scope="module")
def temps():
  # T = 4 only for BPTT's linearity; flatness compares 2 with 8.
  return {(mode, t): _temp_bytes(mode, t)
          for mode in ("bptt", "remat", "amrb") for t in (2, 4, 8)
          if t != 4 or mode == "bptt"}


@pytest.mark.parametrize("mode", ["amrb", "remat"])
def test_replay_memory_is_flat_in_segments(temps, mode):
  # Only the [T, B, M, d] replay buffer grows: 4 KiB here, against ~1.4 MB of activations.
  assert temps[(mode, 8)] <= 1.05 * temps[(mode, 2)]


def test_bptt_memory_grows_linearly(temps):
  per_segment_2_4 = (temps[("bptt", 4)] - temps[("bptt", 2)]) / 2
  per_segment_4_8 = (temps[("bptt", 8)] - temps[("bptt", 4)]) / 4
  assert per_segment_2_4 > 0
  assert abs(per_segment_4_8 - per_segment_2_4) <= 0.1 * per_segment_2_4
  # Each extra segment costs BPTT about one segment's worth of activations.
  assert per_segment_2_4 >= 0.5 * temps[("amrb", 2)]


def test_amrb_beats_bptt_by_more_than_segments_over_two(temps):
  assert temps[("bptt", 8)] >= 4 * temps[("amrb", 8)]


def test_amrb_replay_holds_one_layer_at_a_time(temps):
  # One layer's activations of one segment: what BPTT stores per extra segment (1 layer).
  one_layer = (temps[("bptt", 4)] - temps[("bptt", 2)]) / 2
  per_layer = (_temp_bytes("amrb", 2, num_layers=3) - temps[("amrb", 2)]) / 2
  # Replaying the whole segment under one vjp held every layer's activations: 1.57x here.
  # Block by block, a layer adds its input and its weights' gradients: 0.42x.
  assert per_layer <= 0.75 * one_layer, (per_layer, one_layer)
