"""The GPU campaign's dry run: every phase's command runs on CPU at toy sizes."""

import json

import pytest

from experiments import gpu_campaign


# Slow set: a minute of subprocesses that check the campaign script's plumbing, not the model
# or the trainer (each phase's trainer and benchmark paths are covered by the default set).
@pytest.mark.slow
def test_dry_run_runs_every_phase_and_writes_its_results(tmp_path):
  out = tmp_path / "results"
  code = gpu_campaign.main(["--dry_run", "--out_dir", str(out),
                            "--workdir", str(tmp_path / "work")])
  summary = json.loads((out / "dryrun_campaign.json").read_text())
  assert [p["phase"] for p in summary["phases"]] == ["tests", "throughput", "memory", "paper",
                                                     "listops"]
  assert code == 0, summary
  tests = summary["phases"][0]["tests"]
  assert tests["tests"] > 5 and tests["failures"] == tests["errors"] == 0, tests
  throughput = json.loads((out / "train_throughput_dryrun.json").read_text())["rows"]
  assert throughput[0]["config"] == "lra_image" and throughput[0]["step_s"] > 0
  memory = json.loads((out / "compare_memory_cpu_toy.json").read_text())["rows"]
  assert {(r["framework"], r["mode"]) for r in memory} == {
      ("jax", "bptt"), ("jax", "amrb"), ("torch", "bptt"), ("torch", "amrb")}
  assert all(r["memory_bytes"] > 0 and r["step_s"] > 0 for r in memory)
  paper = json.loads((out / "paper_table_dryrun.json").read_text())["rows"]
  assert {(r["model"], r["amrb_replay"]) for r in paper} == {("rmaat", "block"), ("rmt", None)}
  assert all(r["memory_mib"] > 0 and r["step_s"] > 0 for r in paper)
  listops = json.loads((out / "dryrun_listops.json").read_text())
  assert listops["steps_planned"] == 3 and listops["val_accuracy"][-1][0] == 3
  assert 0 <= listops["results"]["test_accuracy"] <= 1
