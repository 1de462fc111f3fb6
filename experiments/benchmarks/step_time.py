"""Training-step time, JAX vs the PyTorch port, interleaved in one process at equal threads.

    python -m experiments.benchmarks.step_time [--tasks text retrieval] [--segments 2 4]
        [--modes bptt amrb] [--amrb_replay block segment] [--batch 2] [--repeats 7]
        [--warmup 1] [--threads 1] [--cores C ...] [--out_dir experiments/results]
        [--tag NAME] [--toy]

Issue 13 item 4 asks whether JAX's step is no slower than the port's in every mode at the
same threads. Both frameworks train the same model (compare_memory_measure.task_config: the
task config with T segments of its 512-token segments; --toy: d 16, 1 layer, 16-token
segments) on the same random batch, float32, dropout on, AdamW (lr 1e-3, weight decay 1e-2,
eps 1e-8). One step = forward + backward + optimizer update; compilation and --warmup steps
are not timed. JAX uses model.dropout_rng="auto" (threefry on CPU: what a CPU user runs);
torch flushes denormals, as XLA does (compare_memory_measure.torch_training_step). JAX runs
on the CPU backend (JAX_PLATFORMS=cpu), since the torch port runs on the CPU.

AMRB: both frameworks replay a segment the way model.amrb_replay says: "block" (the
default: one block at a time, one extra forward of L-1 blocks per segment) or "segment"
(the whole segment at once, the paper's replay). --amrb_replay lists the replays to time,
each its own row, the same replay in JAX and in the port.

Threads, equal in both frameworks, set before jax and torch are imported:
- The process is pinned (os.sched_setaffinity) to --threads cores (--cores, or the first
  cores it may run on), so both frameworks share the same cores. XLA's CPU client sizes its
  intra-op pool ("tf_XLAEigen" threads) by the schedulable CPUs, so pinning is what restricts
  XLA to N threads; the output records the pool's thread count as observed after the first
  JAX step.
- --threads 1 also sets XLA_FLAGS=--xla_cpu_multi_thread_eigen=false (Eigen's matmuls run
  on the calling thread instead of being split over the pool). The folklore
  "intra_op_parallelism_threads=1" is not set: it is no XLA flag, and XLA's parser of
  XLA_FLAGS stops, silently, at the first word not starting with "-", dropping it and any
  flag after it (xla/parse_flags_from_env.cc), so it would only look like a setting.
- torch.set_num_threads(N).
Without sched_setaffinity (not Linux) nothing restricts XLA's pool; the output says so.

Timing: per (task, T, mode) both steps are built, each runs --warmup steps, then single
timed steps alternate J, T, J, T, ... for --repeats pairs, so that load drift on a shared
machine hits both alike. Reported: the median wall time of each, the ratio of the medians
(JAX / torch) and the median of the per-pair ratios (more robust to drift), the process CPU
time per step (all threads; on a contended core it counts the work, not the waiting) and
os.getloadavg() before and after each row. Writes <out_dir>/step_time[_toy][_<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from experiments.benchmarks.compare_memory_report import TASKS
from experiments.results_store import RESULTS_DIR, ROOT, provenance, provenance_line

MODES = ("bptt", "amrb", "remat")
REPLAYS = ("block", "segment")
XLA_POOL_THREAD_NAME = "tf_XLAEigen"  # XLA's CPU intra-op pool (thread names in /proc)


# ----------------------------------------------------------------------------- threads
def configure_threads(threads: int, cores: list[int] | None) -> dict:
  """Pins the process to `threads` cores and sets XLA_FLAGS; before jax/torch are imported.

  Returns the settings as applied (torch's thread count is set after its import, in main).
  """
  if "jax" in sys.modules or "torch" in sys.modules:  # their thread pools would be sized
    raise RuntimeError("configure_threads must run before jax and torch are imported")
  settings: dict = {"threads": threads}
  can_pin = hasattr(os, "sched_setaffinity")
  allowed = sorted(os.sched_getaffinity(0)) if can_pin else None
  settings["cores_allowed_before"] = allowed
  if can_pin:
    chosen = sorted(cores) if cores else allowed[:threads]
    if len(chosen) != threads or not set(chosen) <= set(allowed):
      raise SystemExit(f"error: need {threads} distinct cores out of {allowed}, got {chosen}")
    os.sched_setaffinity(0, chosen)
    settings["pinned_cores"] = sorted(os.sched_getaffinity(0))
  else:
    settings["pinned_cores"] = None
  # Ours first: the parser stops at the first word without "-" in what the user set.
  ours = ["--xla_cpu_multi_thread_eigen=false"] if threads == 1 else []
  os.environ["XLA_FLAGS"] = " ".join([*ours, os.environ.get("XLA_FLAGS", "")]).strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  settings["xla_flags"] = os.environ["XLA_FLAGS"]
  settings["jax_platforms"] = "cpu"
  return settings


def thread_names() -> dict[str, int]:
  """How many of this process's threads carry each name (Linux /proc; else empty)."""
  try:
    tasks = os.listdir("/proc/self/task")
  except OSError:
    return {}
  names = collections.Counter()
  for task in tasks:
    try:
      names[Path(f"/proc/self/task/{task}/comm").read_text().strip()] += 1
    except OSError:  # the thread ended meanwhile
      pass
  return dict(names)


def xla_thread_check(settings: dict) -> dict:
  """Whether XLA's intra-op pool really has `threads` threads (after a JAX step ran)."""
  pool = thread_names().get(XLA_POOL_THREAD_NAME)
  threads = settings["threads"]
  if settings["pinned_cores"] is None:
    note = (f"no sched_setaffinity: XLA's intra-op pool is NOT restricted to {threads} "
            f"thread(s) (it has {pool} threads)")
    restricted = False
  elif pool is None:
    note = (f"no '{XLA_POOL_THREAD_NAME}' threads found to count; the process is pinned to "
            f"{threads} core(s), so XLA cannot run on more cores than that")
    restricted = None
  else:
    restricted = pool == threads
    note = (f"XLA's intra-op pool has {pool} thread(s) on {threads} pinned core(s)"
            + ("" if restricted else ": NOT the requested thread count"))
  return {"xla_pool_threads": pool, "xla_restricted": restricted, "xla_note": note}


# ----------------------------------------------------------------------------- timing
def _load() -> list[float]:
  """os.getloadavg(): the 1, 5 and 15 min load averages, to 2 decimals."""
  return [round(x, 2) for x in os.getloadavg()]


def _timed(step: Callable[[], None]) -> tuple[float, float]:
  """Wall and process-CPU seconds of one call."""
  cpu, wall = time.process_time(), time.perf_counter()
  step()
  return time.perf_counter() - wall, time.process_time() - cpu


def measure_row(task: str, segments: int, mode: str, replay: str | None, batch: int,
                repeats: int, warmup: int, toy: bool, on_first_jax_step: Callable[[], None],
                attention: str = "astro") -> dict:
  """One (task, T, mode[, replay]) row: --warmup steps each, then J, T pairs, timed."""
  from experiments.benchmarks.compare_memory_measure import (
    TIMING_DROPOUT_RNG,
    jax_training_step,
    task_config,
    torch_training_step,
  )

  load_before = _load()
  cfg = task_config(task, segments, mode, toy)
  cfg = dataclasses.replace(cfg, dropout_rng=TIMING_DROPOUT_RNG, attention=attention,
                            amrb_replay=replay or cfg.amrb_replay)
  run_jax, compile_s = jax_training_step(cfg, batch)
  run_torch = torch_training_step(cfg, batch).run
  warm = {"jax": [], "torch": []}
  for _ in range(warmup):
    warm["jax"].append(_timed(run_jax)[0])
    on_first_jax_step()
    warm["torch"].append(_timed(run_torch)[0])
  times = {"jax": [], "torch": []}
  cpu = {"jax": [], "torch": []}
  for _ in range(repeats):
    for name, run in (("jax", run_jax), ("torch", run_torch)):
      wall, cpu_s = _timed(run)
      times[name].append(wall)
      cpu[name].append(cpu_s)
  pair_ratios = [j / t for j, t in zip(times["jax"], times["torch"], strict=True)]
  med = {k: statistics.median(v) for k, v in times.items()}
  cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
  row = {"task": task, "segments": segments, "seq_len": cfg.seq_len, "mode": mode,
         "attention": attention,
         "jax_amrb_replay": cfg.amrb_replay if mode == "amrb" else None,
         "torch_amrb_replay": cfg.amrb_replay if mode == "amrb" else None,
         "batch": batch, "repeats": repeats, "warmup": warmup,
         "jax_dropout_rng": cfg.dropout_rng, "jax_compile_s": compile_s,
         "jax_warmup_s": warm["jax"], "torch_warmup_s": warm["torch"],
         "jax_s": times["jax"], "torch_s": times["torch"],
         "jax_cpu_s": cpu["jax"], "torch_cpu_s": cpu["torch"],
         "jax_median_s": med["jax"], "torch_median_s": med["torch"],
         "ratio_of_medians": med["jax"] / med["torch"],
         "pair_ratios": pair_ratios, "pair_ratio_median": statistics.median(pair_ratios),
         "jax_cpu_median_s": cpu_med["jax"], "torch_cpu_median_s": cpu_med["torch"],
         "cpu_ratio_of_medians": cpu_med["jax"] / cpu_med["torch"],
         "load_before": load_before, "load_after": _load(),
         "measured_at": datetime.datetime.now().isoformat(timespec="seconds")}
  del run_jax, run_torch
  gc.collect()  # free this row's models, compiled step and optimizer state
  return row


# ----------------------------------------------------------------------------- report
def _mode_label(row: dict) -> str:
  return f"amrb ({row['jax_amrb_replay']} replay)" if row["mode"] == "amrb" else row["mode"]


def table(rows: list[dict]) -> str:
  lines = ["| task | T | tokens | mode (both frameworks) | JAX (s) | torch (s) | "
           "JAX/torch medians | "
           "JAX/torch pairs: median [min-max] | JAX cpu (s) | torch cpu (s) | "
           "JAX/torch cpu | load 1-min before -> after |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['task']} | {r['segments']} | {r['seq_len']} | {_mode_label(r)} | "
        f"{r['jax_median_s']:.3f} | {r['torch_median_s']:.3f} | {r['ratio_of_medians']:.2f} | "
        f"{r['pair_ratio_median']:.2f} [{min(r['pair_ratios']):.2f}-"
        f"{max(r['pair_ratios']):.2f}] | {r['jax_cpu_median_s']:.3f} | "
        f"{r['torch_cpu_median_s']:.3f} | {r['cpu_ratio_of_medians']:.2f} | "
        f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} |")
  return "\n".join(lines)


def summary(rows: list[dict]) -> str:
  n = len(rows)
  by_medians = sum(r["ratio_of_medians"] <= 1 for r in rows)
  by_pairs = sum(r["pair_ratio_median"] <= 1 for r in rows)
  slower = [f"{r['task']} T={r['segments']} {_mode_label(r)} ({r['pair_ratio_median']:.2f})"
            for r in rows if r["pair_ratio_median"] > 1]
  return (f"JAX <= torch in {by_medians}/{n} rows by the ratio of medians, {by_pairs}/{n} by "
          f"the median per-pair ratio."
          + (f" JAX slower (median pair ratio): {'; '.join(slower)}." if slower else ""))


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _git_state() -> dict:
  def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()

  try:
    return {"commit": git("rev-parse", "HEAD"),
            "modified": git("status", "--porcelain", "--untracked-files=no").splitlines()}
  except (OSError, subprocess.CalledProcessError):
    return {"commit": None, "modified": None}


def load_note(loads: list[float], threads: int) -> str:
  """Says when other processes were competing for the CPUs during the run."""
  cores = os.cpu_count() or 1
  if max(loads) <= cores - threads + 0.5:
    return ""
  return (f"shared machine: 1-min load average up to {max(loads):.2f} on {cores} cores "
          f"while this run used {threads}; other processes competed for the pinned core(s), "
          "so wall times include waiting. The per-pair ratios and the CPU-time columns are "
          "the less load-sensitive figures")


def markdown(meta: dict, rows: list[dict]) -> str:
  t = meta["threads"]
  return (
      f"# step_time ({meta['date']}, {meta['cpu_model']}, {meta['cpu_count']} cores, "
      f"jax {meta['versions']['jax']}, torch {meta['versions']['torch']})\n\n"
      f"One training step (forward + backward + AdamW), float32, dropout on, batch "
      f"{meta['batch']}, segments of {meta['segment_len']} tokens"
      f"{' (toy model)' if meta['toy_model'] else ''}; JAX dropout bits "
      f"{meta['jax_dropout_rng']} (threefry on CPU). {meta['warmup']} warm-up step(s) each, "
      f"then {meta['repeats']} interleaved pairs (JAX, torch) per row; medians.\n\n"
      f"Threads: {t['threads']} in both frameworks; process pinned to cores "
      f"{t['pinned_cores']}; torch.get_num_threads() = {t['torch_num_threads']}; "
      f"XLA_FLAGS = `{t['xla_flags']}`; {t['xla_note']}.\n\n"
      f"Load average (1, 5, 15 min): {meta['load_average_before']} before, "
      f"{meta['load_average_after']} after.\n\n"
      f"{table(rows)}\n\n{summary(rows)}\n"
      + (f"\nNote: {meta['load_note']}.\n" if meta["load_note"] else "")
      + f"\n{provenance_line(meta)}"
      + (f" Uncommitted changes: {', '.join(m.strip() for m in meta['git']['modified'])}."
         if meta["git"]["modified"] else "") + "\n")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["text", "retrieval"])
  parser.add_argument("--segments", type=int, nargs="+", default=[2, 4])
  parser.add_argument("--modes", nargs="+", choices=MODES, default=["bptt", "amrb"])
  parser.add_argument("--amrb_replay", nargs="+", choices=REPLAYS, default=list(REPLAYS),
                      help="AMRB replays to time, a row each (both frameworks)")
  parser.add_argument("--attention", choices=("astro", "softmax", "linear"), default="astro",
                      help="the model's attention (softmax: RMT's, jax.nn.dot_product_attention "
                      "against torch's F.scaled_dot_product_attention)")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=7, help="timed (JAX, torch) pairs")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each first")
  parser.add_argument("--threads", type=int, default=1,
                      help="threads (and pinned cores) for both frameworks")
  parser.add_argument("--cores", type=int, nargs="+",
                      help="the cores to pin to (default: the first --threads allowed ones)")
  parser.add_argument("--out_dir", type=Path, default=RESULTS_DIR)
  parser.add_argument("--tag", default="", help="suffix for the output files' names")
  parser.add_argument("--toy", action="store_true",
                      help="a tiny model (d 16, 1 layer, 16-token segments); file suffix _toy")
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: the CPU model and cores)")
  args = parser.parse_args(argv)
  if args.threads < 1 or args.repeats < 1 or args.warmup < 1:
    parser.error("--threads, --repeats and --warmup must be >= 1")
  stamp = provenance(args.machine or f"{cpu_model()}, {os.cpu_count()} cores",
                     module=__spec__.name, argv=argv)

  threads = configure_threads(args.threads, args.cores)
  import torch  # after configure_threads: the pools see the pinned cores

  torch.set_num_threads(args.threads)
  threads["torch_num_threads"] = torch.get_num_threads()
  threads["torch_parallel_info"] = [
      line.strip() for line in torch.__config__.parallel_info().splitlines()
      if "thread" in line.lower() or "backend" in line.lower()]
  checked = {}

  def check_xla_once() -> None:  # the pool exists once a computation has run
    if not checked:
      checked.update(xla_thread_check(threads))
      print(checked["xla_note"], flush=True)

  load_before = _load()
  print(f"load average {load_before}; threads {args.threads}, cores {threads['pinned_cores']}, "
        f"XLA_FLAGS={threads['xla_flags']!r}, torch threads {threads['torch_num_threads']}",
        flush=True)
  rows = []
  for task in args.tasks:
    for segments in args.segments:
      for mode in args.modes:
        for replay in args.amrb_replay if mode == "amrb" else [None]:
          row = measure_row(task, segments, mode, replay, args.batch, args.repeats,
                            args.warmup, args.toy, check_xla_once, args.attention)
          rows.append(row)
          print(f"{task:9s} T={segments:2d} {_mode_label(row):21s} "
                f"jax={row['jax_median_s']:.3f}s torch={row['torch_median_s']:.3f}s "
                f"medians {row['ratio_of_medians']:.2f} pairs {row['pair_ratio_median']:.2f} "
                f"(compile {row['jax_compile_s']:.1f}s) load {row['load_before'][0]:.2f} -> "
                f"{row['load_after'][0]:.2f}", flush=True)
  threads.update(checked)
  load_after = _load()
  all_loads = [load_before[0], load_after[0],
               *(x for r in rows for x in (r["load_before"][0], r["load_after"][0]))]
  meta = {**stamp, "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(),
          "versions": {p: version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch")},
          "git": _git_state(), "threads": threads, "batch": args.batch,
          "task_configs": {t: f"configs/{TASKS[t]}.py" for t in args.tasks},
          "attention": args.attention,
          "repeats": args.repeats, "warmup": args.warmup, "toy_model": args.toy,
          "segment_len": rows[0]["seq_len"] // rows[0]["segments"] if rows else None,
          "jax_dropout_rng": "auto", "dtype": "float32",
          "optimizer": "AdamW lr 1e-3, weight decay 1e-2, eps 1e-8 (optax / torch.optim)",
          "load_average_before": load_before, "load_average_after": load_after,
          "load_note": load_note(all_loads, args.threads)}
  stem = "step_time" + ("_toy" if args.toy else "") + (f"_{args.tag}" if args.tag else "")
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  text = markdown(meta, rows)
  (args.out_dir / f"{stem}.md").write_text(text)
  print("\n" + text)
  print(f"wrote {args.out_dir / stem}.{{json,md}}")


if __name__ == "__main__":
  main()
