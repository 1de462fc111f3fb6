"""Where a JAX training step spends its time, per kind of XLA operation (one CPU core).

    python -m experiments.benchmarks.profile_step [--task text] [--segments 2] [--mode bptt]
        [--amrb_replay block] [--batch 2] [--steps 3] [--top 25] [--tag NAME] [--toy]

Builds the same training step as step_time.py (compare_memory_measure.jax_training_step:
forward + backward + AdamW, float32, dropout on, default dropout bits), pins the process to
one core with one XLA thread, runs --steps steps under `jax.profiler.trace` and sums the
trace's per-operation times by kind (the HLO name without its numeric suffix: `ynn_fusion`
= matmuls XLA's CPU backend hands to YNNPACK, `dot` = matmuls left to Eigen, `copy`,
`transpose_copy_fusion`, ...). Writes experiments/results/profile_step[_<tag>].{json,md}.
This is how issue 13's BPTT step was taken apart (docs/method.md 5.1).
"""

from __future__ import annotations

from experiments.benchmarks.step_time import configure_threads
from experiments.results_store import RESULTS_DIR, provenance, provenance_line

# One core, one XLA thread, before jax is imported (step_time.py --threads 1's settings).
configure_threads(1, None)

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
from jax._src.lib import _profile_data  # noqa: E402

from experiments.benchmarks.compare_memory_measure import (  # noqa: E402
  jax_training_step,
  task_config,
)
from experiments.benchmarks.compare_memory_report import TASKS  # noqa: E402


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """Milliseconds per step by operation kind, from the trace's XLA executor threads."""
  path = next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
  totals: collections.Counter = collections.Counter()
  for plane in _profile_data.ProfileData.from_file(str(path)).planes:
    for line in plane.lines:
      if not line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
        continue
      for event in line.events:
        if "ThunkExecutor" not in event.name:  # the envelope of the whole program
          totals[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns
  return {name: ns / 1e6 / steps for name, ns in totals.most_common()}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", default="text", choices=("text", "retrieval"))
  parser.add_argument("--segments", type=int, default=2)
  parser.add_argument("--mode", default="bptt", choices=("bptt", "remat", "amrb"))
  parser.add_argument("--amrb_replay", default="block", choices=("block", "segment"))
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--tag", default="")
  parser.add_argument("--toy", action="store_true", help="a tiny model (a smoke run)")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: its CPU and cores)")
  args = parser.parse_args(argv)
  stamp = provenance(args.machine, module=__spec__.name, argv=argv)

  cfg = dataclasses.replace(task_config(args.task, args.segments, args.mode, args.toy),
                            amrb_replay=args.amrb_replay)
  run, _ = jax_training_step(cfg, args.batch)
  run()
  run()  # warm-up
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        run()
    times = op_times(trace_dir, args.steps)
  total = sum(times.values())
  what = (f"{args.task}, T = {args.segments}, {args.mode}"
          + (f" ({args.amrb_replay} replay)" if args.mode == "amrb" else "")
          + f", batch {args.batch}")
  meta = {**stamp, "jax": jax.__version__, "threads": 1,
          "task_config": f"configs/{TASKS[args.task]}.py", "task": args.task,
          "segments": args.segments, "mode": args.mode, "amrb_replay": args.amrb_replay,
          "batch": args.batch, "toy_model": args.toy, "model": dataclasses.asdict(cfg)}
  lines = [f"# profile_step ({meta['date']}, jax {jax.__version__}, one CPU core)", "",
           f"{what}: **{total:.1f} ms per step** in XLA operations (mean of {args.steps}).",
           "", "| operation kind | ms per step | share |", "|---|---|---|"]
  lines += [f"| {name} | {ms:.1f} | {ms / total:.1%} |"
            for name, ms in list(times.items())[:args.top]]
  lines += ["", provenance_line(meta)]
  text = "\n".join(lines)
  print(text)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  stem = args.out_dir / ("profile_step" + (f"_{args.tag}" if args.tag else ""))
  stem.with_suffix(".md").write_text(text + "\n")
  stem.with_suffix(".json").write_text(json.dumps(
      {"meta": meta, "config": what, "steps": args.steps, "total_ms": total,
       "ms_per_step": times},
      indent=1))


if __name__ == "__main__":
  main()
