"""Two processes x 2 CPU devices against one process x 4 devices: the same training? (issue 6)

    python -m experiments.reliability.multiprocess_check [--steps 6] [--log_every 2]

tests/test_multiprocess.py's check, longer and with its numbers kept: the tiny ListOps model
(faults.py's `listops_flags`: d 16, 1 layer, generated 40 / 8 / 8 trees) with
global batch 8, dropout 0, no warmup, learning rate 3e-3, `--steps` steps, logged every
`--log_every`, is trained (1) by one process with 4 forced CPU devices and (2) by two
processes with 2 forced CPU devices each, joined by `jax.distributed` on 127.0.0.1 (CPU
collectives: gloo), process 0 generating and preparing a fresh data dir and process 1
waiting for it. Compares the logged train losses (read back from the TensorBoard events),
the final train loss, test loss, test accuracy and best step. Prints and writes
experiments/results/multiprocess_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

from experiments.reliability.faults import (
  listops_config,
  listops_flags,
  run_main,
  run_two_processes,
)
from experiments.results_store import RESULTS_DIR, provenance, provenance_line


def train_losses(workdir: pathlib.Path) -> dict[int, float]:
  """{step: logged train_loss} from a run's TensorBoard events."""
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(workdir),
                                           size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {e.step: e.value for e in acc.Scalars("train_loss")}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--log_every", type=int, default=2)
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args(argv)
  flags = {"train.batch_size": 8, "train.num_steps": args.steps,
           "train.log_every": args.log_every, "train.eval_every": args.steps,
           "train.checkpoint_every": args.steps, "model.dropout_rate": 0.0,
           "train.warmup_steps": 0, "train.learning_rate": 3e-3}

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    start = time.time()
    code, stderr = run_main(tmp / "one", *listops_flags(tmp / "tfds_one", **flags), devices=4)
    one_s = time.time() - start
    if code:
      sys.exit(f"the 1 x 4 run failed ({code}):\n{stderr[-3000:]}")

    start = time.time()
    outcomes = run_two_processes(tmp / "two", listops_flags(tmp / "tfds_two", **flags), tmp,
                                 timeout=900)
    two_s = time.time() - start
    for index, (code, log) in enumerate(outcomes):
      if code:
        sys.exit(f"process {index} of the 2 x 2 run failed ({code}):\n"
                 + log.read_text()[-3000:])

    runs = {}
    for name in ("one", "two"):
      results = json.loads((tmp / name / "results.json").read_text())
      runs[name] = {"train_loss_logged": train_losses(tmp / name),
                    **{k: results[k] for k in ("steps", "train_loss", "test_loss",
                                               "test_accuracy", "best_step")
                       if k in results}}

  one, two = runs["one"], runs["two"]
  steps = sorted(one["train_loss_logged"])
  rel = [abs(two["train_loss_logged"][s] - one["train_loss_logged"][s])
         / abs(one["train_loss_logged"][s]) for s in steps]
  same = {k: one.get(k) == two.get(k) for k in ("steps", "train_loss", "test_loss",
                                                 "test_accuracy", "best_step")}
  lines = ["| run | " + " | ".join(f"train loss, step {s}" for s in steps)
           + " | test loss | test accuracy | best step | wall (s) |",
           "|---|" + "---|" * (len(steps) + 4)]
  for name, label, secs in (("one", "1 process x 4 devices", one_s),
                            ("two", "2 processes x 2 devices", two_s)):
    r = runs[name]
    lines.append(f"| {label} | " + " | ".join(f"{r['train_loss_logged'][s]:.8g}" for s in steps)
                 + f" | {r.get('test_loss', float('nan')):.8g} | {r.get('test_accuracy')} | "
                 f"{r.get('best_step')} | {secs:.0f} |")
  table = "\n".join(lines)
  summary = (f"largest relative difference of the logged train losses: {max(rel):.2g}; "
             f"identical: " + ", ".join(k for k, v in same.items() if v)
             + ("; different: " + ", ".join(k for k, v in same.items() if not v)
                if not all(same.values()) else ""))
  print(table)
  print(summary)
  meta = {**provenance(args.machine, module=__spec__.name,
                      argv=argv),
          "flags": flags, **listops_config(**flags)}
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "multiprocess_check.json").write_text(json.dumps(
      {"meta": meta, "runs": runs, "max_relative_difference": max(rel), "identical": same,
       "wall_s": {"one": one_s, "two": two_s}}, indent=1) + "\n")
  (args.out_dir / "multiprocess_check.md").write_text(
      f"# multiprocess_check ({meta['date']}, {meta['machine']})\n\n{table}\n\n{summary}\n\n"
      f"{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
