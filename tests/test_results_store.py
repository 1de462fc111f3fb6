"""Results files keep every run: rows merged by key, and a stopped sweep loses nothing."""

import json
import os

import pytest

from experiments import learning_curves, memory_benchmark, memory_benchmark_report
from experiments.results_store import (
  key_of,
  merge_rows,
  provenance,
  provenance_line,
  read_rows,
)

KEY = key_of(("task", "model"))


def test_merge_replaces_rows_with_the_same_key_and_keeps_the_others(tmp_path):
  path = tmp_path / "r.json"
  merge_rows(path, [{"task": "a", "model": "x", "v": 1}, {"task": "a", "model": "y", "v": 2}],
             KEY, meta={"n": 1})
  rows = merge_rows(path, [{"task": "a", "model": "x", "v": 3}, {"task": "b", "model": "x",
                                                                  "v": 4}], KEY, meta={"n": 2})
  assert [r["v"] for r in rows] == [3, 2, 4]  # replaced in place, kept, appended
  payload = json.loads(path.read_text())
  assert payload["meta"] == {"n": 2} and payload["rows"] == rows
  assert read_rows(path) == rows
  assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_every_row_says_when_where_and_from_which_commit():
  row = provenance("CPU-2")
  assert row["machine"] == "CPU-2" and row["commit"] not in ("", "unknown")
  assert row["command"].startswith("python -m ") and row["date"][:2] == "20"


def test_a_main_called_with_its_own_arguments_records_them():
  row = provenance(None, module="experiments.x", argv=["--machine", "CPU-2, shared"])
  assert row["command"] == "python -m experiments.x --machine 'CPU-2, shared'"
  assert row["machine"].endswith(f" CPU x {os.cpu_count()}")
  line = provenance_line(row)  # the line under a script's Markdown table
  assert all(str(row[k]) in line for k in ("date", "machine", "commit", "command"))


def _row(task, model, accuracy):
  return {"task": task, "model": model, "variant": "main", "overrides": {}, "steps": 10,
          "batch_size": 4, "test_accuracy": accuracy, "best_step": 10, "val_accuracy": accuracy,
          "train_loss": 1.0, "wall_s": 60.0, "curve": []}


def test_a_learning_curves_rerun_stopped_part_way_keeps_the_other_rows(tmp_path, monkeypatch):
  # Four runs from an earlier invocation ...
  for task, model in (("image", "rmaat"), ("image", "rmt"), ("image", "rlt"),
                      ("listops", "rmaat")):
    learning_curves.save_run(_row(task, model, 0.5), {task: 0.1}, {"date": "old",
                             "machine": "m"}, tmp_path)
  # ... then a rerun of Image* whose first run finishes and whose second is interrupted.
  calls = []

  def fake_run(task, model, variant, overrides, args):
    calls.append(model)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return _row(task, model, 0.9)

  monkeypatch.setattr(learning_curves, "run", fake_run)
  monkeypatch.setattr(learning_curves, "majority_rate", lambda config: 0.1)
  with pytest.raises(KeyboardInterrupt):
    learning_curves.main(["--tasks", "image", "--out_dir", str(tmp_path)])
  runs = json.loads((tmp_path / "learning_curves.json").read_text())["runs"]
  assert [(r["task"], r["model"], r["test_accuracy"]) for r in runs] == [
      ("image", "rmaat", 0.9), ("image", "rmt", 0.5), ("image", "rlt", 0.5),
      ("listops", "rmaat", 0.5)]
  assert runs[0]["commit"] != "?" and "listops" in (tmp_path / "learning_curves.md").read_text()


def test_memory_benchmark_runs_are_named_by_what_they_train():
  run = memory_benchmark.Run("rmaat", "paper", segments=8)
  assert run.name == "rmaat-paper-pre_ln-T8-p1-m1-s1000"
  # At T = 1 nothing crosses a segment: every retention trains the same model, once.
  names = {memory_benchmark.Run("rmaat", r, segments=1).name for r in ("paper", "none", "reset")}
  assert names == {"rmaat-none-pre_ln-T1-p1-m1-s1000"}
  assert (memory_benchmark.Run("rmaat", "paper", segments=8, retention_backward="none").label()
          == "RMAAT paper pre-LN, backward none")


def test_memory_benchmark_tables_come_from_the_rows():
  base = {"steps": 100, "batch": 32, "segment_len": 64, "chance": 0.1, "pairs": 1,
          "memory_tokens": 1, "model": "rmaat", "eval_segments": None}
  rows = [{**base, "part": "distance", "variant": "RMAAT none pre-LN", "retention": "none",
           "segments": t, "test_accuracy": a, "step_memory_mib": 10.0,
           "bptt_step_memory_mib": 10.0 * t} for t, a in ((1, 1.0), (8, 0.75))]
  rows.append({**base, "part": "length", "variant": "RMAAT none pre-LN", "segments": 8,
               "eval_segments": 64, "eval_tokens": 4096, "test_accuracy": 0.5,
               "num_test_examples": 512})
  text = memory_benchmark_report.table({"meta": {}, "rows": rows})
  assert "| RMAAT none pre-LN | 1.000 | 0.750 |" in text
  assert "| 8 (512) | 10.0 | 80.0 |" in text
  assert "| RMAAT none pre-LN | 0.500 |" in text and "T=64 (4096)" in text


def test_memory_benchmark_stops_a_variant_after_two_distances_at_chance(tmp_path):
  args = memory_benchmark.parse_args(["--workdir", str(tmp_path), "--segments", "2", "4",
                                      "8", "16"])
  run = memory_benchmark.Run("rmaat", "paper")

  def row(t, accuracy, not_trained=None):
    r = {"part": "distance", "variant": run.label(), "segments": t, "pairs": 1,
         "memory_tokens": 1, "eval_segments": None, "steps": 1000, "chance": 0.1,
         "test_accuracy": accuracy, "not_trained": not_trained}
    return {memory_benchmark.ROW_KEY(r): r}

  at = lambda t, known: memory_benchmark.at_chance_before(  # noqa: E731
      memory_benchmark.Run("rmaat", "paper", segments=t), args, known)
  assert at(8, {**row(2, 1.0), **row(4, 0.11)}) == []  # learned at T = 2
  assert at(8, {**row(2, 0.12), **row(4, 0.11)}) == [2, 4]
  assert at(16, {**row(4, 0.11), **row(8, None, "at chance at T = 2, 4")}) == [4, 8]
  assert at(16, {**row(4, 0.11)}) == []  # T = 8 not measured: train
  args.stop_after_chance = 0
  assert at(8, {**row(2, 0.12), **row(4, 0.11)}) == []
