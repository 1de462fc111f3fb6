"""The inline numbers of README.md, RESULTS.md's prose and docs/method.md.

A marker `<!-- n:family.arg1.arg2 -->TEXT<!-- /n -->` is NUMBERS[family](raw, "arg1", "arg2"):
one number, formatted as the sentence around it reads it (a percentage, "45x", "38 MiB").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from experiments.report import Raw
from experiments.report_tables import (
  MIB,
  _paper_rows,
  _recall,
  compare_memory_figures,
  recall_step_memory,
  rf_product,
  sig2,
  slope,
)


def percent(x: float, digits: int = 1) -> str:
  return f"{100 * x:.{digits}f} %"


def times(x: float) -> str:
  """A ratio as prose reads it: 45x, 605x, 4.4x."""
  return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x"


def span(values: list[float], unit: str = "x") -> str:
  """'2.1-2.2x', or '2.2x' when they round alike."""
  lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
  return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


def size(mib: float) -> str:
  return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


# ----------------------------------------------------------------------------- accuracy


def _lc_run(raw: Raw, task: str, model: str, variant: str) -> dict:
  return next(r for r in raw.json("learning_curves.json")["runs"]
              if (r["task"], r["model"], r["variant"]) == (task, model, variant))


def lc_acc(raw: Raw, task: str, model: str, variant: str) -> str:
  return percent(_lc_run(raw, task, model, variant)["test_accuracy"])


def lc_steps(raw: Raw, task: str) -> str:
  return str(_lc_run(raw, task, "rmaat", "main")["steps"])


def lc_runs(raw: Raw) -> str:
  return str(len(raw.json("learning_curves.json")["runs"]))


def lc_train_min(raw: Raw) -> str:
  """Minutes of training over all runs (the trainer's wall time, data preparation apart)."""
  return f"{sum(r['wall_s'] for r in raw.json('learning_curves.json')['runs']) / 60:.0f}"


def _standard(rows: list[dict]) -> list[dict]:
  """Rows of the benchmark's standard setting: exact backward, the fewest steps."""
  steps = min(r["steps"] for r in rows)
  return [r for r in rows if r["steps"] == steps and r["retention_backward"] == "exact"]


def recall_acc(raw: Raw, model: str, retention: str, layout: str, segments: str) -> str:
  row = next(r for r in _standard(_recall(raw, "distance")) if (
      r["model"], r["retention"], r["layout"], r["segments"]) == (
      model, retention, layout, int(segments)))
  return f"{row['test_accuracy']:.3f}"


def recall_diag(raw: Raw, retention: str, backward: str, layout: str, segments: str,
                steps: str = "") -> str:
  """A run of the forward/backward diagnosis (or the distance run it is compared with):
  forward `retention`, backward `backward` (`exact`: the forward's own factors)."""
  rows = _recall(raw, "diagnosis") + _recall(raw, "distance")
  want = int(steps) if steps else min(r["steps"] for r in rows)
  row = next(r for r in rows if r["model"] == "rmaat" and (
      r["retention"], r["retention_backward"], r["layout"], r["segments"], r["steps"]) == (
      retention, backward, layout, int(segments), want))
  return f"{row['test_accuracy']:.3f}"


def recall_chance(raw: Raw) -> str:
  return f"{_recall(raw, 'distance')[0]['chance']:.2f}"


def recall_chance_from(raw: Raw, model: str, retention: str) -> str:
  """The shortest T from which every run of this model (either block layout) is at chance:
  below chance + 0.05, or not trained because it was at chance before."""
  rows = [r for r in _standard(_recall(raw, "distance"))
          if (r["model"], r["retention"]) == (model, retention)]

  def at_chance(r: dict) -> bool:
    acc = r["test_accuracy"]
    return bool(r.get("not_trained")) if acc is None else acc < r["chance"] + 0.05

  ts = sorted({r["segments"] for r in rows})
  first = next(t for t in ts if all(at_chance(r) for r in rows if r["segments"] >= t))
  return str(first)


def recall_len(raw: Raw, retention: str, segments: str) -> str:
  row = next(r for r in _recall(raw, "length")
             if r["retention"] == retention and r["eval_segments"] == int(segments))
  return percent(row["test_accuracy"], 0)


def recall_mem(raw: Raw, mode: str, segments: str) -> str:
  return size(recall_step_memory(raw)[int(segments)][mode])


def recall_mem_ratio(raw: Raw, segments: str) -> str:
  m = recall_step_memory(raw)[int(segments)]
  return times(m["bptt"] / m["amrb"])


def recall_steps_factor(raw: Raw) -> str:
  steps = {r["steps"] for r in _recall(raw, "diagnosis") + _recall(raw, "distance")}
  return f"{max(steps) // min(steps)}x"


def recall_runs(raw: Raw) -> str:
  return str(len({r["run"] for r in raw.json("memory_benchmark.json")["rows"]
                  if r.get("wall_s")}))


def recall_train_hours(raw: Raw) -> str:
  """Hours of training, each run once (several rows can report one run)."""
  walls = {r["run"]: r["wall_s"] for r in raw.json("memory_benchmark.json")["rows"]
           if r.get("wall_s")}
  return f"{sum(walls.values()) / 3600:.1f}"


def rf_product_at(raw: Raw, segments: str) -> str:
  return sig2(rf_product(raw, int(segments)))


# ----------------------------------------------------------------------------- memory, speed


def paper_batch(raw: Raw) -> str:
  return str(raw.json("paper_table_cpu.json")["meta"]["batch"])


def paper_mem_ratio(raw: Raw, replay: str, tokens: str) -> str:
  _, _, _, by = _paper_rows(raw)
  n = int(tokens)
  return times(by[("rmt", None, n)]["memory_mib"] / by[("rmaat", replay, n)]["memory_mib"])


def paper_rmaat_mib_max(raw: Raw, replay: str) -> str:
  _, tokens, _, by = _paper_rows(raw)
  return f"{math.ceil(max(by[('rmaat', replay, n)]['memory_mib'] for n in tokens))} MiB"


def paper_time_ratio(raw: Raw, replay: str) -> str:
  _, tokens, _, by = _paper_rows(raw)
  ratios = [by[("rmt", None, n)]["step_s"] / by[("rmaat", replay, n)]["step_s"] for n in tokens
            if by[("rmt", None, n)]["step_s"] and by[("rmaat", replay, n)]["step_s"]]
  lo, hi = f"{min(ratios):.1f}", f"{max(ratios):.1f}"
  return f"{lo}x" if lo == hi else f"{lo}-{hi}x"


def seg_bptt_per_segment(raw: Raw) -> str:
  bptt = sorted((int(k), v) for k, v in raw.json("segment_memory.json")["bptt_temp_mib"].items())
  (t0, m0), (t1, m1) = bptt[0], bptt[-1]
  return f"{(m1 - m0) / (t1 - t0):.1f} MiB"


def seg_amrb(raw: Raw, replay: str, layers: str) -> str:
  data = raw.json("segment_memory.json")
  rows = data["amrb_temp_mib"] if replay == "block" else data["amrb_segment_replay_temp_mib"]
  row = next(r for r in rows if r["layers"] == int(layers) and r["dropout"] > 0)
  return f"{row['temp_mib']:.1f} MiB"


def cm_ratio(raw: Raw, what: str) -> str:
  """JAX / port: `bptt_segment` (bytes per added segment) or `amrb_peak`."""
  figures = compare_memory_figures(raw)
  return f"{figures[what]['jax'] / figures[what]['torch']:.2f}x"


def cm_mib(raw: Raw, what: str, framework: str) -> str:
  return f"{compare_memory_figures(raw)[what][framework]:.1f} MiB"


def step_ratio(raw: Raw, mode: str, replay: str = "") -> str:
  """JAX / port step time (ratio of medians) over the measured T, astromorphic attention."""
  rows = [r for r in raw.json("step_time_cpu1.json")["rows"] if r["mode"] == mode
          and r.get("attention", "astro") == "astro"
          and (not replay or r["jax_amrb_replay"] == replay)]
  return span([r["ratio_of_medians"] for r in rows])



def rmt_jax_over_port(raw: Raw) -> str:
  """Our JAX RMT step over the port's (torch SDPA) RMT step, ratio of medians, over T."""
  return span([r["ratio_of_medians"] for r in raw.json("step_time_rmt_cpu1.json")["rows"]])


def rmt_port_over_rmaat_jax(raw: Raw) -> str:
  """The port's RMT step (torch SDPA, the fastest RMT measured here) over JAX RMAAT's AMRB
  step (block replay), Retrieval config, per T; CPU time, the less load-sensitive figure
  of two runs minutes apart."""
  rmt = {r["segments"]: r["torch_cpu_median_s"]
         for r in raw.json("step_time_rmt_cpu1.json")["rows"]}
  rmaat = {r["segments"]: r["jax_cpu_median_s"]
           for r in raw.json("step_time_rmaat_retrieval_cpu1.json")["rows"]
           if r["jax_amrb_replay"] == "block"}
  return span([rmt[t] / rmaat[t] for t in sorted(rmt.keys() & rmaat.keys())])

def dropout_rng_step(raw: Raw, rng: str) -> str:
  data = raw.json(f"train_throughput_listops_cpu_b32_{rng}.json")
  return f"{data['rows'][0]['step_s']:.2f} s"


def dropout_rng_slower(raw: Raw) -> str:
  auto, rbg = (raw.json(f"train_throughput_listops_cpu_b32_{r}.json")["rows"][0]["step_s"]
               for r in ("auto", "rbg"))
  return f"{100 * (rbg / auto - 1):.0f} %"


def profile_ms(raw: Raw, tag: str) -> str:
  return f"{raw.json(f'profile_step_{tag}.json')['total_ms']:.0f} ms"


def memory_scaling_amrb_flat(raw: Raw) -> str:
  """AMRB's temp at the most segments over at the fewest."""
  rows = sorted((r["segments"], r["temp"]) for r in raw.json("memory_scaling.json")["rows"]
                if r["mode"] == "amrb")
  return f"{rows[-1][1] / rows[0][1]:.3f}x"


def memory_scaling_ratio(raw: Raw, segments: str) -> str:
  temp = {(r["mode"], r["segments"]): r["temp"] for r in raw.json("memory_scaling.json")["rows"]}
  return f"{temp[('bptt', int(segments))] / temp[('amrb', int(segments))]:.2f}x"


def memory_scaling_per_segment(raw: Raw) -> str:
  rows = sorted((r["segments"], r["temp"] / MIB)
                for r in raw.json("memory_scaling.json")["rows"] if r["mode"] == "bptt")
  return f"{slope([t for t, _ in rows], [m for _, m in rows]):.1f} MiB"


# ----------------------------------------------------------------------------- data


def opencv_cases(raw: Raw, what: str) -> str:
  """`cases` or `different` of the cv2.dilate emulation check."""
  text = raw.text("pathfinder_reference_opencv_check.txt")
  cases, different = re.search(r"(\d+) random cases, (\d+) different", text).groups()
  return f"{int(cases if what == 'cases' else different):,}"


NUMBERS: dict[str, Callable[..., str]] = {
    "lc_acc": lc_acc, "lc_steps": lc_steps, "lc_runs": lc_runs, "lc_train_min": lc_train_min,
    "recall_acc": recall_acc, "recall_diag": recall_diag, "recall_chance": recall_chance,
    "recall_chance_from": recall_chance_from, "recall_len": recall_len,
    "recall_mem": recall_mem, "recall_mem_ratio": recall_mem_ratio,
    "recall_steps_factor": recall_steps_factor, "recall_runs": recall_runs,
    "recall_train_hours": recall_train_hours, "rf_product": rf_product_at,
    "paper_batch": paper_batch, "paper_mem_ratio": paper_mem_ratio,
    "paper_rmaat_mib_max": paper_rmaat_mib_max, "paper_time_ratio": paper_time_ratio,
    "seg_bptt_per_segment": seg_bptt_per_segment, "seg_amrb": seg_amrb,
    "cm_ratio": cm_ratio, "cm_mib": cm_mib, "step_ratio": step_ratio,
    "rmt_jax_over_port": rmt_jax_over_port, "rmt_port_over_rmaat_jax": rmt_port_over_rmaat_jax,
    "dropout_rng_step": dropout_rng_step, "dropout_rng_slower": dropout_rng_slower,
    "profile_ms": profile_ms, "memory_scaling_amrb_flat": memory_scaling_amrb_flat,
    "memory_scaling_ratio": memory_scaling_ratio,
    "memory_scaling_per_segment": memory_scaling_per_segment, "opencv_cases": opencv_cases,
}
