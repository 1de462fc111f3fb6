"""Forced CPU devices on a busy machine: do multi-device runs finish?

    python -m experiments.reliability.collective_stress [--tries 3] [--busy 3] [--eval_examples 256]

Each try starts `--busy` busy-loop processes, then trains the tiny ListOps model for 20 steps
on 2 forced CPU devices with validation every 5 steps over the whole validation split
(`--eval_examples`, batch 4: 64 evaluation steps each time) and evaluates the test split.
Before the fix in train.evaluate, XLA's CPU runtime aborted such runs with "Termination
timeout for all gather ... 40 seconds exceeded" (exit 134). Prints and saves one row per try
to experiments/results/collective_stress.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from experiments.reliability.faults import listops_config, listops_flags, run_main
from experiments.results_store import RESULTS_DIR, provenance, provenance_line


def train_flags(eval_examples: int) -> dict:
  # One flag per field: ml_collections appends a repeated tuple override to the first.
  return {"train.num_steps": 20, "train.eval_every": 5, "train.num_eval_batches": 0,
          "data.generate_sizes": f"(40,{eval_examples},{eval_examples})"}


def one_try(work: pathlib.Path, busy: int, eval_examples: int) -> dict:
  loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
  try:
    flags = listops_flags(work / "tfds", **train_flags(eval_examples))
    start = time.time()
    code, stderr = run_main(work / "run", *flags, devices=2, compile_cache=False)
    aborted = "Termination timeout" in stderr
    return {"exit_status": code, "seconds": round(time.time() - start, 1),
            "collective_timeout": aborted, "load_average": os.getloadavg()[0]}
  finally:
    for loop in loops:
      loop.kill()
      loop.wait()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tries", type=int, default=3)
  parser.add_argument("--busy", type=int, default=3, help="busy-loop processes beside the run")
  parser.add_argument("--eval_examples", type=int, default=256)
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: its CPU and cores)")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args(argv)
  rows = []
  for index in range(args.tries):
    with tempfile.TemporaryDirectory() as tmp:
      row = {"try": index + 1, **one_try(pathlib.Path(tmp), args.busy, args.eval_examples)}
    rows.append(row)
    print(json.dumps(row), flush=True)
  meta = {**provenance(args.machine, module=__spec__.name,
                      argv=argv),
          "cores": os.cpu_count(), "busy_processes": args.busy,
          "eval_examples": args.eval_examples, "devices": 2,
          **listops_config(**train_flags(args.eval_examples))}
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "collective_stress.json").write_text(
      json.dumps({"meta": meta, "rows": rows}, indent=1))
  lines = [f"# collective_stress ({meta['date']}, {meta['cores']} cores, {args.busy} busy "
           f"loops, {args.eval_examples} evaluation examples)", "",
           "| try | exit status | seconds | collective timeout |", "|---|---|---|---|"]
  lines += [f"| {r['try']} | {r['exit_status']} | {r['seconds']} | {r['collective_timeout']} |"
            for r in rows]
  lines += ["", provenance_line(meta)]
  (args.out_dir / "collective_stress.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
