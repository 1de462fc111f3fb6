"""One command for the GPU numbers, on one GPU in about 12 minutes:

    python -m experiments.gpu_campaign [--budget_min 12] [--out_dir experiments/results]
    python -m experiments.gpu_campaign --dry_run      # the same path on CPU, toy sizes

Phases, each a subprocess (a fresh process per measurement where JAX must reset its peak
memory counter), each with its share of the budget; a phase that overruns is stopped and
recorded as such, and the next one starts:

0. tests: the model-level test files (GPU_TESTS: gradients across backprop modes, the
   float64 gradient oracle, dropout, layers, attention, retention, compiled memory, the
   PyTorch port's parity) on the GPU backend -> tests_<tag>.xml (JUnit) and the pass /
   fail counts in the summary. Needs pytest and hypothesis (skipped, and recorded so,
   when pytest is missing).
1. throughput: experiments.benchmarks.train_throughput at every task config's own batch (the
   trainer's pmapped step) -> train_throughput_gpu.{json,md}.
2. memory: experiments.benchmarks.compare_memory --device gpu on the Text and Retrieval configs,
   BPTT vs AMRB, JAX vs the PyTorch port (CUDA), runtime peaks (`memory_stats()`,
   `torch.cuda.max_memory_allocated`) and step times at the same sizes ->
   compare_memory_gpu.{json,md,png}.
3. paper: experiments.benchmarks.paper_table, RMAAT (both AMRB replays) vs RMT on the Retrieval
   config at 1K-16K tokens, memory and step time, in bfloat16 (RMT's attention through
   cuDNN's flash attention) -> paper_table_gpu.{json,md}.
4. listops: the full ListOps config (generated data) trained for as many steps as the
   remaining minutes allow at phase 1's measured step time (SIGTERM at the deadline: the
   trainer saves and stops) -> gpu_listops.json (validation accuracy vs step, test accuracy).

Writes gpu_campaign.{json,md}: each phase's command, status and wall time. Needs no
TensorFlow (TFDS ArrayRecord + grain input; TensorBoard events via the tensorboard package).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from experiments.learning_curves import read_scalars
from experiments.reliability.faults import config_flags, tiny_listops

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The ListOps phase: data preparation, compile and the final test pass, not steps.
LISTOPS_OVERHEAD_S = 150
# Toy sizes of the dry run (CPU, seconds): the same commands with smaller arguments.
DRY_THROUGHPUT = ["--configs", "lra_image", "--preset", "cpu", "--batch", "2", "--steps", "1"]
DRY_MEMORY = ["--toy", "--segments", "2", "--tasks", "text", "--batch", "1", "--repeats", "1",
              "--device", "cpu"]
DRY_PAPER = ["--tokens", "1024", "--batch", "1", "--runs", "1", "--amrb_replay", "block"]
# The backend-sensitive tests (no data, no TensorFlow): what a GPU must pass.
GPU_TESTS = ["tests/test_model.py", "tests/test_gradient_oracle.py", "tests/test_dropout.py",
             "tests/test_layers.py", "tests/test_attention.py", "tests/test_retention.py",
             "tests/test_memory.py", "tests/test_torch_parity.py"]
DRY_TESTS = ["tests/test_layers.py"]


def tests_phase(tag: str, files: list[str], out_dir: pathlib.Path, timeout_s: float,
                log_dir: pathlib.Path, env: dict[str, str]) -> dict:
  """Runs the test files on this backend; the phase's row gains the JUnit counts."""
  if importlib.util.find_spec("pytest") is None:
    print("[tests] skipped: pytest is not installed", flush=True)
    return {"phase": "tests", "command": "", "status": "skipped: pytest not installed",
            "exit": None, "wall_s": 0.0, "log": ""}
  report = out_dir / f"tests_{tag}.xml"
  # addopts off: the project's default options name pytest-xdist, which a GPU host may lack.
  command = [sys.executable, "-m", "pytest", *files, "-q", "-o", "addopts=", "-m",
             "not slow and not cpu_only", "-p", "no:cacheprovider", f"--junitxml={report}"]
  row = run_phase("tests", command, timeout_s, log_dir, env)
  if report.exists():
    import xml.etree.ElementTree as ElementTree

    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    row["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors",
                                                      "skipped")}
  return row


def run_phase(name: str, command: list[str], timeout_s: float, log_dir: pathlib.Path,
              env: dict[str, str]) -> dict:
  """Runs one phase; on timeout sends SIGTERM (the trainer saves and exits), then kills."""
  start = time.time()
  log = log_dir / f"{name}.log"
  print(f"[{name}] {' '.join(command)} (budget {timeout_s:.0f} s, log {log})", flush=True)
  with log.open("w") as out:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
      code, status = process.wait(timeout=max(timeout_s, 1)), "done"
    except subprocess.TimeoutExpired:
      process.send_signal(signal.SIGTERM)
      try:
        code = process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
      status = "stopped at its deadline"
  if code not in (0, 143) and status == "done":
    status = f"failed (exit {code}); see {log}"
  wall = time.time() - start
  print(f"[{name}] {status} in {wall:.0f} s", flush=True)
  return {"phase": name, "command": " ".join(command), "status": status, "exit": code,
          "wall_s": wall, "log": str(log)}


def listops_steps(throughput_file: pathlib.Path, seconds: float, fallback_step_s: float
                  ) -> int:
  """Steps of the ListOps config that fit `seconds`, from phase 1's step time."""
  step_s = fallback_step_s
  if throughput_file.exists():
    rows = json.loads(throughput_file.read_text())["rows"]
    step_s = next((r["step_s"] for r in rows if r["config"] == "lra_listops"), step_s)
  # Validation every tenth of the run on 50 batches costs about 10 % more.
  return max(int(seconds / (step_s * 1.1)), 2)


def listops_curve(workdir: pathlib.Path) -> dict:
  scalars = read_scalars(workdir)
  results_file = workdir / "results.json"
  results = json.loads(results_file.read_text()) if results_file.exists() else None
  return {"val_accuracy": [[s, v] for s, _, v in scalars.get("val_accuracy", [])],
          "train_loss": [[s, v] for s, _, v in scalars.get("train_loss", [])],
          "steps_per_sec": [[s, v] for s, _, v in scalars.get("steps_per_sec", [])],
          "results": results}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--budget_min", type=float, default=12.0)
  parser.add_argument("--out_dir", type=pathlib.Path, default=ROOT / "experiments" / "results")
  parser.add_argument("--workdir", type=pathlib.Path, default=None,
                      help="ListOps run and logs (default: a new temporary directory)")
  parser.add_argument("--data_dir", default="", help="TFDS data dir (default: TFDS's)")
  parser.add_argument("--dry_run", action="store_true",
                      help="CPU, toy sizes, seconds: checks the path, measures nothing")
  args = parser.parse_args(argv)

  start, budget = time.time(), args.budget_min * 60
  workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="rmaat_gpu_campaign_"))
  workdir.mkdir(parents=True, exist_ok=True)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")  # true peaks, shared GPU
  if args.dry_run:
    env["JAX_PLATFORMS"] = "cpu"
  tag = "dryrun" if args.dry_run else "gpu"
  python = [sys.executable, "-m"]
  phases = []

  def remaining() -> float:
    return budget - (time.time() - start)

  phases.append(tests_phase(tag, DRY_TESTS if args.dry_run else GPU_TESTS, args.out_dir,
                            0.25 * budget, workdir, env))

  throughput_cmd = python + ["experiments.benchmarks.train_throughput",
                             "--out_dir", str(args.out_dir), "--tag", tag]
  throughput_cmd += DRY_THROUGHPUT if args.dry_run else ["--batch", "0", "--steps", "5"]
  phases.append(run_phase("throughput", throughput_cmd, 0.15 * budget, workdir, env))

  memory_cmd = python + ["experiments.benchmarks.compare_memory", "--out_dir", str(args.out_dir)]
  memory_cmd += DRY_MEMORY if args.dry_run else [
      "--device", "gpu", "--tasks", "text", "retrieval", "--segments", "8", "--batch", "32"]
  phases.append(run_phase("memory", memory_cmd, 0.25 * budget, workdir, env))

  paper_cmd = python + ["experiments.benchmarks.paper_table", "--out_dir", str(args.out_dir),
                        "--tag", tag]
  # bfloat16: RMT's attention then runs cuDNN's flash attention, the baseline as run on GPUs.
  paper_cmd += DRY_PAPER if args.dry_run else [
      "--tokens", "1024", "4096", "16384", "--time_max_tokens", "16384", "--dtype", "bfloat16"]
  phases.append(run_phase("paper", paper_cmd, 0.15 * budget, workdir, env))

  listops_dir = workdir / "listops"
  seconds = remaining() - LISTOPS_OVERHEAD_S
  flags = tiny_listops() if args.dry_run else {}  # dry run: the tests' tiny model
  steps = 3 if args.dry_run else listops_steps(
      args.out_dir / f"train_throughput_{tag}.json", seconds, fallback_step_s=0.1)
  evals = 1 if args.dry_run else 10  # validations in the run
  flags.update({"train.num_steps": steps, "train.warmup_steps": min(1000, steps // 10),
                "train.eval_every": max(steps // evals, 1),
                "train.checkpoint_every": max(steps // max(evals // 2, 1), 1)})
  if args.data_dir:
    flags["data.data_dir"] = args.data_dir
  elif args.dry_run:
    flags["data.data_dir"] = str(workdir / "tfds")
  listops_cmd = python + ["rmaat_jax.main", "--config", "configs/lra_listops.py",
                          f"--workdir={listops_dir}"]
  listops_cmd += config_flags(flags)
  phases.append(run_phase("listops", listops_cmd, max(remaining() - 20, 60), workdir, env))
  curve = listops_curve(listops_dir) if listops_dir.exists() else {}
  (args.out_dir / f"{tag}_listops.json").write_text(json.dumps(
      {"steps_planned": steps, **curve}, indent=1))

  summary = {"date": datetime.date.today().isoformat(), "dry_run": args.dry_run,
             "budget_min": args.budget_min, "wall_s": time.time() - start, "phases": phases}
  (args.out_dir / f"{tag}_campaign.json").write_text(json.dumps(summary, indent=1))
  lines = [f"# gpu_campaign ({summary['date']}{', DRY RUN on CPU' if args.dry_run else ''})",
           "", "| phase | status | wall (s) | command |", "|---|---|---|---|"]
  lines += [f"| {p['phase']} | {p['status']}{_counts(p)} | {p['wall_s']:.0f} | "
            f"`{p['command']}` |" for p in phases]
  (args.out_dir / f"{tag}_campaign.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0 if all(p["status"] == "done" or p["status"].startswith("skipped")
                  for p in phases) else 1


def _counts(phase: dict) -> str:
  counts = phase.get("tests")
  if not counts:
    return ""
  return (f" ({counts['tests']} tests: {counts['failures']} failed, {counts['errors']} "
          f"errors, {counts['skipped']} skipped)")


if __name__ == "__main__":
  sys.exit(main())
