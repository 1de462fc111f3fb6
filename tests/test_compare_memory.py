"""experiments/benchmarks/compare_memory*.py and torch_port/memory_meter.py: one memory
metric for both frameworks. The profiler meter is checked against tensors of known size
(numeric oracle), then on the port's training step against the training state it must at
least hold."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from experiments.benchmarks import compare_memory
from experiments.benchmarks.compare_memory_measure import (
  EPS,
  LEARNING_RATE,
  WEIGHT_DECAY,
  example_batch,
  measure,
  task_config,
)
from experiments.benchmarks.compare_memory_report import METRICS, bptt_slope, plot, summary, table
from experiments.torch_port.memory_meter import (
  SavedTensorMeter,
  profile_live_bytes,
  storage_bytes,
  training_state_bytes,
  training_step_live_bytes,
)
from experiments.torch_port.model import build_torch_model

MIB = 2**20


def test_profile_live_bytes_matches_tensors_of_known_size():
  baseline = 12345  # bytes live before profiling: added to every figure
  kept = []

  def both_alive():  # 1 MiB, then 2 MiB while the first is alive, then both freed
    a = torch.empty(MIB // 4)  # float32: 1 MiB
    b = torch.empty(MIB // 2)  # 2 MiB
    del a, b

  def one_at_a_time():  # the 1 MiB one is freed before the 2 MiB one: peak 2 MiB
    a = torch.empty(MIB // 4)
    del a
    b = torch.empty(MIB // 2)
    del b

  def keep():  # still alive after the region: counted in the next region's start
    kept.append(torch.empty(MIB // 4, dtype=torch.float64))  # 2 MiB

  def release():
    kept.pop()

  got = profile_live_bytes([both_alive, one_at_a_time, keep, release], baseline)
  want = [(baseline + 3 * MIB, baseline, baseline, 2),
          (baseline + 2 * MIB, baseline, baseline, 2),
          (baseline + 2 * MIB, baseline, baseline + 2 * MIB, 1),
          (baseline + 2 * MIB, baseline + 2 * MIB, baseline, 0)]
  for region, (peak, start, end, allocations) in zip(got, want, strict=True):
    # torch reports requested sizes (its 64-byte alignment is not counted): exact figures,
    # up to a stray small allocation of torch's own
    assert 0 <= region.peak_bytes - peak < 1024, region
    assert (region.start_bytes, region.end_bytes) == (start, end), region
    assert region.allocations == allocations, region


def _port_step(backprop: str, num_segments: int):
  torch.manual_seed(0)
  cfg = task_config("text", num_segments, backprop, toy=True)
  model = build_torch_model(cfg).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, eps=EPS,
                                weight_decay=WEIGHT_DECAY)
  tokens, labels = (torch.as_tensor(a, dtype=torch.long) for a in example_batch(cfg, 2))

  def step():
    optimizer.zero_grad(set_to_none=True)
    model.loss_and_backward(tokens, labels)
    optimizer.step()

  return model, optimizer, step, [tokens, labels]


def test_port_step_peak_holds_params_grads_adam_and_saved_activations():
  model, optimizer, step, inputs = _port_step("bptt", 2)
  meter = SavedTensorMeter(model.parameters())

  def warmup():
    with meter:
      step()

  live = training_step_live_bytes(model, optimizer, step, inputs, warmup=warmup)
  state = training_state_bytes(model, optimizer)
  constants = storage_bytes([*model.buffers(), *inputs])  # astro's position kernel, batch
  assert state["optimizer"] >= 2 * state["params"] > 0  # AdamW: exp_avg, exp_avg_sq, step
  # Every free was seen: the running total at the step's start and end is exactly the
  # parameters + gradients + AdamW state + buffers + batch counted from the tensors.
  assert live["start"] == live["end"] == live["state"]
  assert live["state"] == state["params"] + state["grads"] + state["optimizer"] + constants
  assert live["peak"] >= state["params"] + state["grads"] + state["optimizer"]
  # Gradients are freed at the step's start (set_to_none), but the saved activations are all
  # alive together at the end of the forward pass, on top of params, AdamW state and batch.
  assert live["peak"] >= (live["baseline"] + state["optimizer"] + meter.peak_bytes)
  assert meter.peak_bytes > 0 and live["warmup_peak"] > live["baseline"]


def test_port_bptt_peak_grows_with_segments():
  peaks = {t: training_step_live_bytes(*_port_step("bptt", t))["peak"] for t in (2, 4)}
  assert peaks[4] > peaks[2]


def test_training_step_live_bytes_needs_a_fresh_optimizer():
  model, optimizer, step, inputs = _port_step("amrb", 2)
  step()
  with pytest.raises(ValueError, match="warm-up step"):
    training_step_live_bytes(model, optimizer, step, inputs)


@pytest.mark.slow  # compiles the JAX step twice (11 s); a benchmark script's detail
def test_jax_row_uses_rbg_for_memory_and_auto_for_time():
  row = measure("jax", "text", "amrb", 2, 1, 1, "cpu", toy=True)
  assert row["memory_metric"] == METRICS["cpu", "jax"]
  assert (row["memory_dropout_rng"], row["timing_dropout_rng"]) == ("rbg", "threefry")
  assert row["memory_bytes"] == row["xla_total"] > row["xla_arguments"] > 0
  assert row["transient_bytes"] == row["xla_total"] - row["xla_arguments"]
  assert row["xla_total_timed_step"] > 0 and row["step_s"] > 0


def _rows() -> list[dict]:
  rows = []
  for fw, per_segment, amrb in (("jax", 3 * MIB, 40 * MIB), ("torch", 2 * MIB, 50 * MIB)):
    for t in (2, 4, 8):
      for mode, memory in (("bptt", 10 * MIB + per_segment * t), ("amrb", amrb)):
        rows.append({"task": "text", "segments": t, "seq_len": 512 * t, "framework": fw,
                     "mode": mode, "memory_bytes": memory, "transient_bytes": memory - MIB,
                     "step_s": 1.0, "memory_metric": METRICS["cpu", fw],
                     **({"torch_saved_peak": MIB} if fw == "torch" else {})})
  return rows


def test_report_names_the_metric_and_compares_per_segment_and_amrb(tmp_path):
  rows = _rows()
  assert bptt_slope(rows, "text", "jax") == pytest.approx(3 * MIB)
  assert bptt_slope(rows, "text", "torch") == pytest.approx(2 * MIB)
  text = table(rows, "cpu")
  assert "XLA buffer assignment" in text and "torch.profiler" in text
  assert "same kind of measurement in both" in text
  text = summary(rows, [2, 4, 8])
  assert "| text | 3.0 / 2.0 | 1.50x | 40.0 / 50.0 | 0.80x |" in text
  meta = {"batch": 2, "device_name": "test CPU", "jax": "x", "torch": "y", "segment_len": 512}
  plot(rows, [2, 4, 8], "cpu", meta, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").stat().st_size > 0


def test_resume_measures_rows_of_another_metric_again(tmp_path):
  rows_file = tmp_path / "compare_memory_cpu.rows.jsonl"
  current, old = _rows()[0], {**_rows()[1], "memory_metric": "an older metric"}
  rows_file.write_text(json.dumps(current) + "\n" + json.dumps(old) + "\n")
  args = argparse.Namespace(resume=True, frameworks=[], tasks=["text"], segments=[2, 4, 8])
  assert compare_memory.sweep(args, "cpu", rows_file) == [current]
  assert [json.loads(line) for line in rows_file.read_text().splitlines()] == [current]
  moved = tmp_path / "compare_memory_cpu.rows_other_metric.jsonl"  # kept, not deleted
  assert [json.loads(line) for line in moved.read_text().splitlines()] == [old]
