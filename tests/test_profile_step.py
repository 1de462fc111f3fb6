"""experiments/benchmarks/profile_step.py reads JAX's profiler trace (a private reader that may move
between JAX versions): a toy run must attribute the step's time to XLA operation kinds."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow  # a benchmark script's plumbing, in its own pinned process (~10 s)
def test_toy_profile_attributes_time_to_operation_kinds(tmp_path):
  subprocess.run([sys.executable, "-m", "experiments.benchmarks.profile_step", "--toy",
                  "--steps", "2", "--out_dir", str(tmp_path), "--tag", "toy"], check=True,
                 capture_output=True, text=True, timeout=300)
  result = json.loads((tmp_path / "profile_step_toy.json").read_text())
  ops = result["ms_per_step"]
  assert result["total_ms"] > 0 and len(ops) > 3
  assert abs(sum(ops.values()) - result["total_ms"]) < 1e-6 * result["total_ms"] + 1e-9
  assert not any("ThunkExecutor" in name for name in ops)  # envelopes are not operations
  assert "| operation kind |" in (tmp_path / "profile_step_toy.md").read_text()
