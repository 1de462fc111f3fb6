"""What the memory remembers: the recall task across segments, at the `:cpu` model size.

    python -m experiments.memory_benchmark [--parts distance capacity length diagnosis memory]
    python -m experiments.memory_benchmark --report      # tables and plot from the JSON

Every training run is the trainer's own `train_and_evaluate` on `configs/memory_recall.py`
(test accuracy of the best-validation checkpoint); all runs share steps, batch, seed and
learning-rate schedule. A rerun reuses finished runs (their workdir holds results.json) and
results rows are merged by key, so a stopped invocation loses nothing. Parts:

- distance: test accuracy against T segments of 64 tokens (one key -> value pair in segment 1,
  the query in segment T) for RMAAT with the paper's retention, without it (`none`) and with
  the memory cut (`reset`), RMT and RLT, pre-LN blocks; RMAAT `paper` / `none` also post-LN.
  Each row also holds the compiled memory of its training step and of the same step in BPTT.
  A variant that stayed at chance at two shorter T in a row is not trained at longer T
  (`--stop_after_chance 0` trains every T); its rows say so.
- capacity: RMAAT (`none`, pre-LN) with 1-8 pairs and 1 or 4 memory tokens at T = 4, and the
  T = 1 control for each number of pairs.
- length: the T = 8 models (`paper`, `streaming`, `none`) evaluated, forward only, at 16 to
  1024 segments (`train.evaluate_workdir(..., other_length=True)`, as --eval_other_length).
- diagnosis: why `paper` loses the fact: T = 8 runs whose backward pass scales dL/dmem by
  other factors than the forward (`model.retention_backward`), and `paper` with 5x the steps.
- memory: compiled training-step memory of AMRB and BPTT at 64-1024 segments (no training).

Writes experiments/results/memory_benchmark.{json,md,png} (tables and plot:
memory_benchmark_report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import time

import ml_collections

from experiments import memory_benchmark_report as report
from experiments.learning_curves import read_scalars
from experiments.results_store import key_of, merge_rows, provenance, read_rows
from rmaat_jax import configs, train
from rmaat_jax.data.tasks import model_config
from rmaat_jax.errors import ConfigError
from rmaat_jax.memory import gradient_step_profile

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PARTS = ("distance", "capacity", "length", "diagnosis", "memory")
ROW_KEY = key_of(("part", "variant", "segments", "pairs", "memory_tokens", "eval_segments",
                  "steps"))
MIB = 2.0 ** 20
CHANCE_MARGIN = 0.05  # "at chance": test accuracy at most chance + this
LABELS = {"rmaat": "RMAAT", "rmt": "RMT", "rlt": "RLT"}
LAYOUT_LABELS = {"pre_ln": "pre-LN", "post_ln": "post-LN"}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of configs/memory_recall.py at the :cpu size."""

  model: str = "rmaat"  # preset: rmaat | rmt | rlt
  retention: str = "none"
  layout: str = "pre_ln"
  segments: int = 8
  pairs: int = 1
  memory_tokens: int = 1
  steps: int = 1000
  retention_backward: str = "exact"

  def canonical(self) -> Run:
    """At T = 1 no memory crosses a segment: every retention trains the same model."""
    if self.segments > 1:
      return self
    return dataclasses.replace(self, retention="none", retention_backward="exact")

  @property
  def name(self) -> str:
    run = self.canonical()
    backward = "" if run.retention_backward == "exact" else f"-bw_{run.retention_backward}"
    return (f"{run.model}-{run.retention}{backward}-{run.layout}-T{run.segments}"
            f"-p{run.pairs}-m{run.memory_tokens}-s{run.steps}")

  def label(self) -> str:
    model = LABELS[self.model]
    retention = f" {self.retention}" if self.model == "rmaat" else ""
    backward = ("" if self.retention_backward == "exact"
                else f", backward {self.retention_backward}")
    return f"{model}{retention} {LAYOUT_LABELS[self.layout]}{backward}"

  def config(self, args, segments: int | None = None,
             sizes: tuple[int, int, int] | None = None) -> ml_collections.ConfigDict:
    """The trainer's config; `segments` / `sizes` read the model at another length."""
    run = self.canonical()
    config = configs.load("memory_recall", f"{run.model},cpu")
    config.model.update(retention=run.retention if run.model == "rmaat" else "none",
                        retention_backward=run.retention_backward, block_layout=run.layout,
                        num_memory_tokens=run.memory_tokens)
    config.model.num_segments = config.data.recall.num_segments = segments or run.segments
    config.data.recall.num_pairs = run.pairs
    config.data.data_dir = str(args.workdir / "tfds")
    config.data.generate_sizes = sizes or tuple(args.sizes)
    config.train.update(num_steps=run.steps, warmup_steps=max(1, run.steps // 10),
                        eval_every=args.eval_every, checkpoint_every=args.eval_every)
    return config


def distance_runs(args) -> list[tuple[str, Run]]:
  variants = [Run("rmaat", "paper"), Run("rmaat", "none"), Run("rmaat", "reset"),
              Run("rmt"), Run("rlt"), Run("rmaat", "paper", "post_ln"),
              Run("rmaat", "none", "post_ln")]
  return [("distance", dataclasses.replace(v, segments=t, steps=args.steps))
          for t in args.segments for v in variants]


def capacity_runs(args) -> list[tuple[str, Run]]:
  runs = [Run(segments=1, pairs=p, steps=args.steps) for p in args.pairs]
  runs += [Run(segments=4, pairs=p, memory_tokens=m, steps=args.steps)
           for m in (1, 4) for p in args.pairs]
  return [("capacity", run) for run in runs]


def length_models(args) -> list[Run]:
  return [Run("rmaat", r, segments=args.length_from, steps=args.steps)
          for r in ("paper", "streaming", "none")]


def diagnosis_runs(args) -> list[tuple[str, Run]]:
  """At each --diagnosis_segments T (pre-LN; at T = --length_from also post-LN): the paper's
  factors in the forward only or in the backward only; and `paper` with 5x the steps."""
  runs = []
  for t in args.diagnosis_segments:
    layouts = ("pre_ln", "post_ln") if t == args.length_from else ("pre_ln",)
    runs += [Run("rmaat", fwd, layout, t, steps=args.steps, retention_backward=bwd)
             for layout in layouts for fwd, bwd in (("paper", "none"), ("none", "paper"))]
  runs.append(Run("rmaat", "paper", segments=args.length_from, steps=5 * args.steps))
  return [("diagnosis", run) for run in runs]


def train_run(run: Run, args) -> dict:
  """Trains (or reuses) one run; returns its results and wall time from its own events."""
  config = run.config(args)
  workdir = args.workdir / "runs" / run.name
  done = workdir / "results.json"
  trained = workdir / "provenance.json"  # when, where and from which commit it trained
  if done.exists():
    results = json.loads(done.read_text())
  else:
    print(f"training {run.name} ({run.label()})", flush=True)
    results = train.train_and_evaluate(config, str(workdir))
    trained.write_text(json.dumps(args.provenance))  # the code this process started with
  walls = [w for rows in read_scalars(workdir).values() for _, w, _ in rows]
  return {**results, "wall_s": max(walls) - min(walls) if walls else None,
          "config": config,
          "provenance": json.loads(trained.read_text()) if trained.exists() else {}}


def step_memory(config: ml_collections.ConfigDict, backprop: str | None = None) -> float:
  """Compiled memory (MiB) of one training gradient step of the run's model and batch."""
  model = model_config(config)
  if backprop:
    model["backprop"] = backprop
  return gradient_step_profile(model, config.train.batch_size)["total"] / MIB


def at_chance_before(run: Run, args, known: dict[str, dict]) -> list[int]:
  """The last `args.stop_after_chance` shorter distances at which this variant (same model,
  retention and layout) stayed at chance, if it did at all of them: a longer T is then
  not trained (memory cannot carry further than it carries nothing)."""
  count = args.stop_after_chance
  shorter = [t for t in args.segments if t < run.segments][-count:] if count else []
  found = []
  for t in shorter:
    row = known.get(ROW_KEY({"part": "distance", "variant": run.label(), "segments": t,
                             "pairs": run.pairs, "memory_tokens": run.memory_tokens,
                             "eval_segments": None, "steps": run.steps}))
    if row is None:
      return []
    skipped = row.get("test_accuracy") is None and row.get("not_trained")
    if not skipped and (row.get("test_accuracy") is None
                        or row["test_accuracy"] > row["chance"] + CHANCE_MARGIN):
      return []
    found.append(t)
  return found if len(found) == count else []


def training_row(part: str, run: Run, args, known: dict[str, dict]) -> dict:
  finished = (args.workdir / "runs" / run.name / "results.json").exists()
  skip = at_chance_before(run, args, known) if part == "distance" and not finished else []
  if skip:
    print(f"not training {run.name}: at chance at T = {skip}", flush=True)
    config = run.config(args)
    results = {k: None for k in ("test_accuracy", "val_accuracy", "best_step", "train_loss",
                                 "wall_s")}
  else:
    results = train_run(run, args)
    config = results.pop("config")
    trained = results.pop("provenance")
  row = {"part": part, "variant": run.label(), "run": run.name, "model": run.model,
         "retention": run.retention, "retention_backward": run.retention_backward,
         "layout": run.layout, "segments": run.segments, "pairs": run.pairs,
         "memory_tokens": run.memory_tokens, "steps": run.steps,
         "batch": config.train.batch_size, "segment_len": config.data.recall.segment_len,
         "chance": 1.0 / config.data.recall.num_values, "eval_segments": None,
         **{k: results[k] for k in ("test_accuracy", "val_accuracy", "best_step",
                                    "train_loss", "wall_s")},
         "not_trained": f"at chance at T = {', '.join(map(str, skip))}" if skip else None,
         **({} if skip else trained)}
  before = known.get(ROW_KEY(row), {})
  if before.get("run") == run.name and "step_memory_mib" in before:
    row.update({k: before[k] for k in ("step_memory_mib", "bptt_step_memory_mib")})
  elif part in ("distance", "capacity"):
    row["step_memory_mib"] = step_memory(config)
    row["bptt_step_memory_mib"] = (row["step_memory_mib"]
                                   if config.model.backprop == "bptt"
                                   else step_memory(config, "bptt"))
  return row


def length_rows(run: Run, args) -> list[dict]:
  rows = []
  train_run(run, args)
  workdir = args.workdir / "runs" / run.name
  for t in args.lengths:
    done = workdir / f"eval_results_T{t}.json"
    # Each split has its own seeded stream: the test set does not depend on the train size.
    sizes = (32, 32, args.eval_examples)
    refused = None
    if done.exists() and json.loads(done.read_text())["num_test_examples"] == sizes[2]:
      results = json.loads(done.read_text())
    else:
      print(f"evaluating {run.name} at {t} segments", flush=True)
      start = time.time()
      try:
        results = train.evaluate_workdir(run.config(args, t, sizes), str(workdir),
                                         other_length=True)
      except ConfigError as e:  # e.g. `paper` past 174 segments: subnormal factors
        results, refused = {"test_accuracy": None, "seq_len": t * 64,
                            "num_test_examples": sizes[2]}, str(e)
      results["eval_s"] = time.time() - start
    rows.append({"part": "length", "variant": run.label(), "run": run.name,
                 "retention": run.retention, "layout": run.layout, "segments": run.segments,
                 "pairs": run.pairs, "memory_tokens": run.memory_tokens, "steps": run.steps,
                 "eval_segments": t, "eval_tokens": results["seq_len"],
                 "test_accuracy": results["test_accuracy"],
                 "num_test_examples": results["num_test_examples"],
                 "eval_s": results.get("eval_s"), "refused": refused})
  return rows


def memory_rows(args) -> list[dict]:
  rows = []
  for t in args.memory_segments:
    config = Run(segments=t, steps=args.steps).config(args)
    for backprop in ("amrb", "bptt"):
      rows.append({"part": "memory", "variant": f"RMAAT pre-LN {backprop.upper()}",
                   "segments": t, "eval_segments": None, "steps": None, "pairs": 1,
                   "memory_tokens": 1, "tokens": t * config.data.recall.segment_len,
                   "step_memory_mib": step_memory(config, backprop)})
  return rows


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
  parser.add_argument("--workdir", type=pathlib.Path,
                      default=pathlib.Path("/tmp/rmaat_memory_benchmark"))
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
  parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--length_from", type=int, default=8, help="trained T of `length`")
  parser.add_argument("--diagnosis_segments", type=int, nargs="+", default=[4, 8])
  parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 64, 256, 1024])
  parser.add_argument("--memory_segments", type=int, nargs="+", default=[64, 256, 1024])
  parser.add_argument("--eval_examples", type=int, default=512)
  parser.add_argument("--sizes", type=int, nargs=3, default=[20_000, 1_000, 1_000])
  parser.add_argument("--eval_every", type=int, default=100)
  parser.add_argument("--stop_after_chance", type=int, default=2,
                      help="distance: do not train a variant at longer T once it stayed at "
                           "chance at this many shorter T in a row (0: train every T)")
  parser.add_argument("--machine", default=None)
  parser.add_argument("--report", action="store_true", help="only redo tables and plot")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  logging.getLogger().setLevel(logging.WARNING)
  path = args.out_dir / "memory_benchmark.json"
  meta = args.provenance = provenance(args.machine)
  if not args.report:
    known = {ROW_KEY(row): row for row in read_rows(path)}

    def save(rows: list[dict]) -> None:
      # A row's own provenance (the training run's) wins over this invocation's.
      merged = merge_rows(path, [{**meta, **row} for row in rows], ROW_KEY, meta=meta)
      known.update({ROW_KEY(row): row for row in merged})

    jobs = []
    if "distance" in args.parts:
      jobs += distance_runs(args)
    if "capacity" in args.parts:
      jobs += capacity_runs(args)
    for part, run in jobs:
      save([training_row(part, run, args, known)])
    if "length" in args.parts:
      for run in length_models(args):
        save(length_rows(run, args))
    if "diagnosis" in args.parts:
      for part, run in diagnosis_runs(args):
        save([training_row(part, run, args, known)])
    if "memory" in args.parts:
      save(memory_rows(args))
  report.write(path, args.out_dir)
  print((args.out_dir / "memory_benchmark.md").read_text())


if __name__ == "__main__":
  main()
