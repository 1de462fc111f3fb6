"""Training memory and step time of RMAAT, JAX vs PyTorch, BPTT vs AMRB, vs segments.

    python -m experiments.benchmarks.compare_memory [--segments 2 4 8 16 32]
        [--tasks text retrieval] [--batch 2] [--repeats 3] [--out_dir experiments/results]
        [--device auto|cpu|gpu] [--frameworks jax torch] [--torch_threads N] [--tag NAME]
        [--resume] [--quick] [--toy] [--replot compare_memory_<device>.json]

Models: the Text and Retrieval configs (configs/lra_text.py, configs/lra_retrieval.py:
d 256 / 128, 4 layers, 4 heads, d_ff 1024 / 512, 1 / 4 memory tokens, Retrieval a dual
encoder), astro attention, dropout 0.1, with T segments of the configs' 512 tokens, i.e.
seq_len = 512 T (per document); T = 8 is the configs' own 4096. One step = forward +
backward + AdamW update, float32. The PyTorch model is experiments/torch_port/ (the
port checked against JAX by tests/test_torch_parity.py). AMRB replays each segment block by
block in both frameworks (model.amrb_replay's default, "block").

Memory: the same kind of measurement in both frameworks, the peak of live bytes of one
training step (parameters, AdamW state and batch included); the table, JSON (meta.memory_metric,
each row's memory_metric) and plot say which:
- GPU: the runtime peak, `peak_bytes_in_use` (JAX, XLA_PYTHON_CLIENT_PREALLOCATE=false)
  and `torch.cuda.max_memory_allocated` (a step after a warm-up step); each measurement runs
  in a fresh subprocess, since JAX cannot reset its peak counter.
- CPU: JAX = XLA's buffer assignment of the jitted step (compiled memory analysis:
  arguments + outputs + temp - aliased; temp holds activations, gradients and workspace);
  PyTorch = the peak of live CPU-allocator bytes over a step after a warm-up step, from
  `torch.profiler` (profile_memory) allocation and free records: every tensor, transient
  workspace included (experiments/torch_port/memory_meter.profile_live_bytes). Neither counts
  memory that kernels allocate outside the framework's allocator (e.g. BLAS packing).
  (On CPU each framework runs in its own subprocess: see _run_in_subprocess.)
- JAX's dropout bits: the memory figure is that of the step compiled with
  model.dropout_rng="rbg", as on a GPU (CPU compilation stands in for a GPU's, as in
  segment_memory.py and paper_table.py); the step TIME is that of the step compiled with
  "auto" (threefry on CPU, what a CPU user runs; rbg on a GPU). On CPU the step is compiled
  twice; the threefry step's memory analysis is kept as xla_total_timed_step.
- Columns: "above state" = memory - (parameters + AdamW state + batch): gradients,
  activations and workspace at the peak; "saved" (torch only) = the peak of storages
  autograd saves for backward (SavedTensorMeter), activations alone.

Step time: median of --repeats steps after one warm-up step (compile excluded).
Writes compare_memory_<device>[_quick][_toy][_<tag>].{json,md,png,rows.jsonl} into --out_dir
and prints the table and the summary ratios (AMRB vs BPTT at 16 segments; JAX vs torch: BPTT
memory per segment, AMRB peak, step time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The parent process only orchestrates: jax and torch are imported by the measuring
# subprocesses (compare_memory_measure), and by the parent only to look for a GPU.
from experiments.benchmarks.compare_memory_report import (
  COMMON_METRIC,
  METRICS,
  TASKS,
  plot,
  summary,
  table,
)
from experiments.results_store import (
  RESULTS_DIR,
  ROOT,
  key_of,
  merge_rows,
  provenance,
  provenance_line,
)

FRAMEWORKS, MODES = ("jax", "torch"), ("bptt", "amrb")


def _detect_device(choice: str) -> str:
  if choice == "cpu":
    return "cpu"
  import jax
  import torch

  gpu = torch.cuda.is_available() and jax.default_backend() == "gpu"
  if choice == "gpu" and not gpu:
    raise SystemExit("error: --device gpu, but JAX and torch do not both see a GPU")
  return "gpu" if choice == "gpu" or (choice == "auto" and gpu) else "cpu"


def _print_row(row: dict) -> None:
  print(f"{row['task']:9s} T={row['segments']:2d} {row['framework']:5s} {row['mode']:4s} "
        f"memory={row['memory_bytes'] / 2**20:9.1f} MiB "
        f"above_state={row['transient_bytes'] / 2**20:9.1f} MiB "
        f"step={row['step_s']:7.3f} s", flush=True)


def _run_in_subprocess(jobs: list[list], rows_file: Path,
                       stamp: dict | None = None) -> list[dict]:
  """Runs measurements in a fresh interpreter; each row is appended to `rows_file` at once.

  On CPU each framework gets its own process, so that neither one's thread pools, caches or
  allocator state affect the other's timings. On GPU every measurement gets its own
  process, because JAX cannot reset its peak-memory counter. Each row carries `stamp`
  (this invocation's provenance: date, machine, commit, command).
  """
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.benchmarks.compare_memory", "--_jobs", json.dumps(jobs)],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  rows = []
  for line in proc.stdout:
    if line.startswith("ROW "):
      rows.append({**json.loads(line[4:]), **(stamp or {})})
      with rows_file.open("a") as f:
        f.write(json.dumps(rows[-1]) + "\n")
      _print_row(rows[-1])
  if proc.wait():
    raise SystemExit(f"error: measurement subprocess failed (exit {proc.returncode}); "
                     f"rows so far are in {rows_file} (rerun with --resume)")
  return rows


def _key(row: dict) -> tuple:
  return (row["task"], row["segments"], row["framework"], row["mode"])


# What distinguishes two measurements in a results file (the batch and the AMRB replay too).
ROW_KEY = key_of(("task", "segments", "framework", "mode", "batch", "memory_metric"))


def sweep(args: argparse.Namespace, device: str, rows_file: Path,
          stamp: dict | None = None) -> list[dict]:
  """Measures every (task, segments, framework, mode) not already in `rows_file`; the rows
  it measures carry `stamp` (provenance), the rows kept from `rows_file` their own."""
  done = {}
  if args.resume and rows_file.exists():
    saved = list(map(json.loads, rows_file.read_text().splitlines()))
    kept = [r for r in saved if r.get("memory_metric") == METRICS[device, r["framework"]]]
    if len(kept) < len(saved):  # measured by an earlier version: another memory metric
      moved = rows_file.with_name(rows_file.name.replace(".rows.", ".rows_other_metric."))
      with moved.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in saved if r not in kept)
      print(f"--resume: {len(saved) - len(kept)} rows of {rows_file} measured memory another "
            f"way; moved to {moved.name}, measuring them again", flush=True)
      rows_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
    done = {_key(r): r for r in kept}
  else:
    rows_file.write_text("")
  for row in done.values():
    _print_row(row)
  for framework in args.frameworks:
    jobs = [[framework, task, mode, t, args.batch, args.repeats, device, args.torch_threads,
             args.toy]
            for task in args.tasks for t in args.segments for mode in MODES
            if (task, t, framework, mode) not in done]
    groups = [[job] for job in jobs] if device == "gpu" else [jobs]
    for group in filter(None, groups):
      done.update({_key(r): r for r in _run_in_subprocess(group, rows_file, stamp)})
  return [done[k] for k in ((task, t, fw, mode) for task in args.tasks
                            for t in args.segments for fw in FRAMEWORKS for mode in MODES)
          if k in done]


def machine_load_note(load_before: float, load_after: float | None = None) -> str:
  """A label for plots whose step times come from a CPU other jobs were using."""
  cores = os.cpu_count() or 1
  if max(load_before, load_after or 0.0) < 0.5 * cores:
    return ""
  after = "" if load_after is None else f", {load_after:.1f} after"
  return (f"loaded CPU: load average {load_before:.1f} before the run{after}, on {cores} "
          "cores; step times are noisy")


def _device_name(device: str) -> str:
  if device == "gpu":
    import torch

    return torch.cuda.get_device_name(0)
  return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def _metadata(args: argparse.Namespace, device: str, rows: list[dict],
              load_before: float) -> dict:
  from importlib.metadata import version

  load_after = os.getloadavg()[0]
  name = _device_name(device)
  threads = sorted({r["torch_threads"] for r in rows if r.get("torch_threads")})
  return {"date": datetime.date.today().isoformat(), "device": device, "device_name": name,
          "jax": version("jax"), "torch": version("torch"), "batch": args.batch,
          "segments": args.segments, "tasks": args.tasks,
          "segment_len": 16 if args.toy else 512, "toy_model": args.toy,
          "dtype": "float32", "torch_threads": threads,
          "repeats": {fw: sorted({r.get("repeats", args.repeats) for r in rows
                                  if r["framework"] == fw}) for fw in FRAMEWORKS},
          "optimizer": "AdamW lr 1e-3, weight decay 1e-2 (optax.adamw / torch.optim.AdamW)",
          "memory_metric": {"both": COMMON_METRIC[device],
                            **{fw: METRICS[device, fw] for fw in FRAMEWORKS}},
          "jax_dropout_rng": {"memory": "rbg", "timing": "auto (threefry on CPU, rbg on GPU)"},
          "notes": sorted({r["recovered_from_log"] for r in rows
                           if r.get("recovered_from_log")}),
          "load_average_before": load_before, "load_average_after": load_after,
          "machine_note": machine_load_note(load_before, load_after) if device == "cpu" else "",
          "task_configs": {t: f"configs/{TASKS[t]}.py" for t in args.tasks}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--segments", type=int, nargs="+", default=[2, 4, 8, 16, 32])
  parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS),
                      default=["text", "retrieval"])
  parser.add_argument("--batch", type=int, default=2,
                      help="examples per step (2: the full CPU sweep fits ~20 min on 2 cores)")
  parser.add_argument("--repeats", type=int, default=3, help="timed steps (median)")
  parser.add_argument("--out_dir", type=Path, default=RESULTS_DIR)
  parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: segments 2 4, batch 1, 1 timed step, file suffix _quick")
  parser.add_argument("--toy", action="store_true",
                      help="a tiny model (d 16, 1 layer, 16-token segments); file suffix _toy")
  parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch.set_num_threads for the torch runs (0: torch's default)")
  parser.add_argument("--resume", action="store_true",
                      help="keep the rows already in <out_dir>/<stem>.rows.jsonl")
  parser.add_argument("--tag", default="",
                      help="suffix for the output files' names (keeps other runs' files)")
  parser.add_argument("--replot", type=Path,
                      help="only redraw the plot of a saved compare_memory_*.json")
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: the GPU's name, or the "
                      "CPU and its cores)")
  parser.add_argument("--_jobs", help=argparse.SUPPRESS)  # worker: JSON list of jobs
  args = parser.parse_args()

  if args.replot:
    saved = json.loads(args.replot.read_text())
    meta = saved["meta"]
    plot(saved["rows"], meta["segments"], meta["device"], meta, args.replot.with_suffix(".png"))
    return

  if args._jobs:  # each job: framework, task, mode, segments, batch, repeats, device
    from experiments.benchmarks.compare_memory_measure import measure

    for job in json.loads(args._jobs):
      start = time.perf_counter()
      row = measure(*job)
      row["measure_s"] = time.perf_counter() - start
      row["measured_at"] = datetime.datetime.now().isoformat(timespec="seconds")
      row["load_average"] = os.getloadavg()[0]  # 1 min, when the row was done
      print("ROW " + json.dumps(row), flush=True)
    return
  if args.quick:
    args.segments, args.batch, args.repeats = [2, 4], 1, 1
  device = _detect_device(args.device)
  stem = (f"compare_memory_{device}" + ("_quick" if args.quick else "")
          + ("_toy" if args.toy else "") + (f"_{args.tag}" if args.tag else ""))
  args.out_dir.mkdir(parents=True, exist_ok=True)
  stamp = provenance(args.machine or _device_name(device),
                     module=__spec__.name)
  load_before = os.getloadavg()[0]
  rows = sweep(args, device, args.out_dir / f"{stem}.rows.jsonl", stamp)
  meta = {**_metadata(args, device, rows, load_before), **stamp}
  # Merged into the file's earlier rows by what was measured (a sweep of some tasks or
  # segments keeps the others; results_store.py). The table and plot show every row.
  rows = merge_rows(args.out_dir / f"{stem}.json", rows, ROW_KEY, meta=meta)
  segments = sorted({r["segments"] for r in rows})
  text = table(rows, device) + "\n\n" + summary(rows, segments)
  print(text)
  (args.out_dir / f"{stem}.md").write_text(
      f"# compare_memory ({meta['date']}, {meta['device_name']}, jax {meta['jax']}, "
      f"torch {meta['torch']}, batch {meta['batch']}, segments of {meta['segment_len']} "
      f"tokens)\n\n"
      f"timed steps per row (median): {meta['repeats']}; torch threads: "
      f"{meta['torch_threads']}; JAX: XLA's default CPU thread pool; JAX dropout bits: rbg "
      f"for memory, auto (threefry on CPU) for step time; load average (1 min) "
      f"{meta['load_average_before']:.2f} before, {meta['load_average_after']:.2f} after, "
      f"on {os.cpu_count()} cores."
      + "".join(f"\nNote: {n}." for n in meta["notes"]) + f"\n\n{text}\n\n"
      f"Latest invocation: {provenance_line(meta)} Each row's own: the JSON.\n")
  plot(rows, segments, device, meta, args.out_dir / f"{stem}.png")
  print(f"wrote {args.out_dir / stem}.{{json,md,png}}")


if __name__ == "__main__":
  main()
