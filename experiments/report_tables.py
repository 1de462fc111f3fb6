"""The generated blocks of experiments/RESULTS.md: block name -> raw files -> Markdown.

Each function takes the raw results folder (report.Raw) and returns a table with the line
saying where it comes from. Only numbers the raw files hold are printed; descriptions of
what was measured stay in RESULTS.md's hand-written text around the blocks.
"""

from __future__ import annotations

import ast
import math
import re
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from experiments.report import Raw, Source, block, md_table

TASKS = {"image": "Image\\* (Fashion-MNIST)", "listops": "ListOps (generated)",
         "pathfinder": "Pathfinder-32 hard (generated)"}
MODELS = {"rmaat": "RMAAT", "rmt": "RMT", "rlt": "RLT"}
MIB = 2.0 ** 20


def f3(x: float | None) -> str:
  return "-" if x is None else f"{x:.3f}"


def f1(x: float | None) -> str:
  return "-" if x is None else f"{x:,.1f}"


def ratio(x: float) -> str:
  return f"{x:.2f}x"


def cell(text: Any) -> str:
  return str(text).replace("|", "\\|")


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
  """Least-squares slope: what one more segment adds."""
  mx, my = statistics.fmean(xs), statistics.fmean(ys)
  return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
          / sum((x - mx) ** 2 for x in xs))


def machine_of(meta: dict) -> str | None:
  """The machine as a raw file records it (the scripts name it in different fields)."""
  if meta.get("machine"):
    return meta["machine"]
  if meta.get("cpu_model"):
    return f"{meta['cpu_model']}, {meta.get('cpu_count', '?')} cores"
  return meta.get("device_name") or (f"{meta['host']} {meta.get('device', '')}".strip()
                                     if meta.get("host") else None)


def meta_record(meta: dict) -> dict:
  git = meta.get("git") or {}
  return {"date": meta.get("date"), "machine": machine_of(meta),
          "commit": meta.get("commit") or (git.get("commit") or "")[:7] or None,
          "command": meta.get("command")}


# ----------------------------------------------------------------------------- accuracy


def quickstart(raw: Raw) -> str:
  name = "readme_quickstart_recall.txt"
  text = raw.text(name)
  head = text.splitlines()[0]
  results = ast.literal_eval(re.search(r"Results: (\{.*\})", text).group(1))
  wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
  seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
  command = re.search(r"^#\s+(?:/usr/bin/time -v )?(python -m \S.*)$", text, re.M).group(1)
  rows = [[f"`{command}`", results["steps"], f3(results["test_accuracy"]),
           results["best_step"], f"{seconds:.0f}"]]
  record = {"date": re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d UTC)", head).group(1),
            "machine": re.search(r"UTC, (.*), commit", head).group(1),
            "commit": re.search(r"commit (\w+)", head).group(1), "command": command}
  return block(md_table(["command", "steps", "test accuracy", "best validation step",
                         "wall (s), data generation included"], rows),
               Source([name], [record]))


def learning_curves(raw: Raw) -> str:
  data = raw.json("learning_curves.json")
  rows = []
  for r in data["runs"]:
    overrides = ", ".join(f"`{k}={v}`" for k, v in (r.get("overrides") or {}).items())
    rows.append([TASKS.get(r["task"], r["task"]), MODELS.get(r["model"], r["model"]),
                 overrides or "as the preset", f3(r["test_accuracy"]),
                 f"{r['val_accuracy']:.3f} ({r['best_step']})",
                 f3(data["majority"][r["task"]]), f3(r["train_loss"]),
                 f"{r['steps']} x {r['batch_size']}", f1(r["wall_s"] / 60)])
  return block(md_table(["task", "model", "overrides", "test acc", "best val acc (step)",
                         "majority", "final train loss", "steps x batch", "wall (min)"], rows),
               Source(["learning_curves.json"], data["runs"]))


def _recall(raw: Raw, part: str) -> list[dict]:
  return [r for r in raw.json("memory_benchmark.json")["rows"] if r["part"] == part]


def _recall_cell(row: dict | None) -> str:
  if row is None:
    return "-"
  if row.get("test_accuracy") is None:
    return "(refused)" if row.get("refused") else "(chance)" if row.get("not_trained") else "-"
  return f3(row["test_accuracy"])


def _tokens(n: int) -> str:
  return f"{n:,}"


def recall_distance(raw: Raw) -> str:
  rows = _recall(raw, "distance")
  segments = sorted({r["segments"] for r in rows})
  seg_len = rows[0]["segment_len"]
  by = {(r["variant"], r["segments"]): r for r in rows}
  table = md_table(["model"] + [f"T={t} ({_tokens(t * seg_len)})" for t in segments],
                   [[v] + [_recall_cell(by.get((v, t))) for t in segments]
                    for v in dict.fromkeys(r["variant"] for r in rows)])
  steps = ", ".join(f"{s:,}" for s in sorted({r["steps"] for r in rows}))
  note = (f"Chance: {rows[0]['chance']:.2f}. Every run: {steps} steps x "
          f"batch {rows[0]['batch']}, segments of {seg_len} tokens.")
  return block(table, Source(["memory_benchmark.json"], rows), note)


def rf_product(raw: Raw, segments: int) -> float:
  """What segment 1 writes reaches segment T scaled by RF(1, T) ... RF(T - 1, T), with
  the closed form of the `paper` factors and the tau_L that model_checks measured."""
  a = math.exp(-1.0 / raw.json("model_checks.json")["retention"]["tau_l"])
  rf = [a ** (t - 1) * (1 - a) / (1 - a ** segments) for t in range(1, segments)]
  return math.prod(rf)


def sig2(x: float) -> str:
  """Two significant digits, in e-notation below 1e-3: 0.021, 4.6e-8."""
  if x >= 1e-3:
    return f"{x:.2g}"
  mantissa, exponent = f"{x:.1e}".split("e")
  return f"{mantissa}e{int(exponent)}"


def recall_diagnosis(raw: Raw) -> str:
  diagnosis = _recall(raw, "diagnosis")
  ts = sorted({r["segments"] for r in diagnosis})
  plain = [r for r in _recall(raw, "distance") if r["model"] == "rmaat"
           and r["retention"] in ("paper", "none") and r["segments"] in ts]
  rows = []
  for r in sorted(plain + diagnosis, key=lambda r: (
      r["segments"], r["layout"] != "pre_ln", r["steps"], r["retention_backward"] != "exact",
      r["retention"])):
    backward = r["retention_backward"]
    rows.append([r["segments"], sig2(rf_product(raw, r["segments"])),
                 "pre-LN" if r["layout"] == "pre_ln" else "post-LN", f"`{r['retention']}`",
                 f"`{r['retention']}` (exact)" if backward == "exact" else f"`{backward}`",
                 f"{r['steps']:,}", _recall_cell(r)])
  return block(md_table(["T", "product of RF, `paper`", "blocks", "forward", "backward",
                         "steps", "test accuracy"], rows),
               Source(["memory_benchmark.json", "model_checks.json"], plain + diagnosis))


def recall_length(raw: Raw) -> str:
  rows = _recall(raw, "length")
  ts = sorted({r["eval_segments"] for r in rows})
  seg_len = _recall(raw, "distance")[0]["segment_len"]  # evaluation rows do not repeat it
  by = {(r["variant"], r["eval_segments"]): r for r in rows}
  table = md_table(["model"] + [f"T={t} ({_tokens(t * seg_len)})" for t in ts],
                   [[v] + [_recall_cell(by.get((v, t))) for t in ts]
                    for v in dict.fromkeys(r["variant"] for r in rows)])
  trained = sorted({r["segments"] for r in rows})
  examples = sorted({r["num_test_examples"] for r in rows})
  note = (f"Trained at T = {', '.join(map(str, trained))}; "
          f"{', '.join(map(str, examples))} test examples per length.")
  return block(table, Source(["memory_benchmark.json"], rows), note)


def recall_capacity(raw: Raw) -> str:
  rows = _recall(raw, "capacity")
  pairs = sorted({r["pairs"] for r in rows})
  by = {(r["segments"], r["memory_tokens"], r["pairs"]): r for r in rows}
  keys = list(dict.fromkeys((r["segments"], r["memory_tokens"]) for r in rows))
  table = md_table(["T", "memory tokens"] + [f"{p} pair{'s' * (p > 1)}" for p in pairs],
                   [[t, m] + [_recall_cell(by.get((t, m, p))) for p in pairs]
                    for t, m in keys])
  return block(table, Source(["memory_benchmark.json"], rows),
               f"Model: {', '.join(dict.fromkeys(r['variant'] for r in rows))}.")


def recall_step_memory(raw: Raw) -> dict[int, dict[str, float]]:
  """T -> {amrb, bptt, rmt, rlt}: compiled MiB of one training step at batch 32."""
  out: dict[int, dict[str, float]] = {}
  for r in _recall(raw, "distance"):
    entry = out.setdefault(r["segments"], {})
    if r["variant"] == "RMAAT none pre-LN":
      entry.update(amrb=r["step_memory_mib"], bptt=r["bptt_step_memory_mib"])
    elif r["variant"] in ("RMT pre-LN", "RLT pre-LN"):
      entry[r["model"]] = r["step_memory_mib"]
  for r in _recall(raw, "memory"):
    out.setdefault(r["segments"], {})["amrb" if "AMRB" in r["variant"] else "bptt"] = (
        r["step_memory_mib"])
  return dict(sorted(out.items()))


def recall_memory(raw: Raw) -> str:
  seg_len = _recall(raw, "distance")[0]["segment_len"]
  rows = [[f"{t} ({_tokens(t * seg_len)})", f1(m.get("amrb")), f1(m.get("bptt")),
           f"{m['bptt'] / m['amrb']:.1f}x" if "amrb" in m and "bptt" in m else "-",
           f1(m.get("rmt")), f1(m.get("rlt"))] for t, m in recall_step_memory(raw).items()]
  used = _recall(raw, "memory") + _recall(raw, "distance")
  return block(md_table(["T (tokens)", "RMAAT, AMRB (MiB)", "RMAAT in BPTT (MiB)",
                         "BPTT / AMRB", "RMT, BPTT (MiB)", "RLT, BPTT (MiB)"], rows),
               Source(["memory_benchmark.json"], used))


def model_checks(raw: Raw) -> str:
  data = raw.json("model_checks.json")
  ret = data["retention"]
  rf16 = ret["rf_T16_first_last"]
  rows = [["RF(t, 4), t = 1..4", ", ".join(f"{x:.3f}" for x in ret["rf_T4"])],
          ["RF(1, 16) ... RF(16, 16)", f"{rf16[0]:.3f} ... {sig2(rf16[1])}"],
          ["tau_L (cycles)", f3(ret["tau_l"])],
          ["largest difference from A^(t-1) (1 - A) / (1 - A^T), T = 1..300",
           f"{ret['max_abs_diff_closed_form_T1_300']:.1e}"],
          ["RF(t, T + 1) < RF(t, T) for every t <= T, T = 1..64",
           "yes" if ret["rf_decreases_with_T_for_T1_64"] else "no"],
          ["relative gradient error, bfloat16 compute vs float32 (the tests' tiny model, AMRB)",
           f"{100 * data['bf16_relative_gradient_error']:.2f} %"]]
  return block(md_table(["check", "value"], rows),
               Source(["model_checks.json"], [meta_record(data["meta"])]))


# ----------------------------------------------------------------------------- memory


def memory_scaling(raw: Raw) -> str:
  data = raw.json("memory_scaling.json")
  meta = data["meta"]
  temp = {(r["mode"], r["segments"]): r["temp"] / MIB for r in data["rows"]}
  segments = sorted({r["segments"] for r in data["rows"]})
  rows = [[t, _tokens(t * meta["segment_len"]), f1(temp[("bptt", t)]), f1(temp[("remat", t)]),
           f1(temp[("amrb", t)]), ratio(temp[("bptt", t)] / temp[("amrb", t)])]
          for t in segments]
  m = meta["model"]
  note = (f"Model: d {m['emb_dim']}, {m['num_heads']} heads, {m['num_layers']} layers, d_ff "
          f"{m['mlp_dim']}, {m['num_memory_tokens']} memory token(s), dropout "
          f"{m['dropout_rate']} ({m['dropout_rng']} bits), retention `{m['retention']}`; "
          f"segments of {meta['segment_len']} tokens, batch {meta['batch']}. BPTT adds "
          f"{slope(segments, [temp[('bptt', t)] for t in segments]):.1f} MiB per segment; "
          f"AMRB at {segments[-1]} segments is "
          f"{temp[('amrb', segments[-1])] / temp[('amrb', segments[0])]:.3f}x AMRB at "
          f"{segments[0]}.")
  return block(md_table(["segments", "tokens", "BPTT temp (MiB)", "remat temp (MiB)",
                         "AMRB temp (MiB)", "BPTT / AMRB"], rows),
               Source(["memory_scaling.json"], [meta_record(meta)],
                      rerun="python -m experiments.benchmarks.memory_scaling"), note)


def _paper_rows(raw: Raw) -> tuple[dict, list[int], list[str], dict]:
  data = raw.json("paper_table_cpu.json")
  rows = data["rows"]
  tokens = sorted({r["tokens"] for r in rows})
  replays = list(dict.fromkeys(r["amrb_replay"] for r in rows if r["model"] == "rmaat"))
  by = {(r["model"], r["amrb_replay"] if r["model"] == "rmaat" else None, r["tokens"]): r
        for r in rows}
  return data, tokens, replays, by


REPLAY = {"block": "block replay", "segment": "whole-segment replay"}


def _paper_source(data: dict) -> Source:
  return Source(["paper_table_cpu.json"], [meta_record(data["meta"])] + data["rows"],
                rerun="python -m experiments.benchmarks.paper_table")


def _paper_columns(raw: Raw, field: str, unit: str, fmt: Callable[[float], str]):
  """The paper table's rows for one measured field: RMAAT per replay, RMT, and the ratios;
  lengths where a model was not measured (step_s None: not timed) are left out."""
  data, tokens, replays, by = _paper_rows(raw)
  header = ["tokens per document", "segments"]
  header += [f"RMAAT, {REPLAY.get(p, p)} ({unit})" for p in replays] + [f"RMT ({unit})"]
  header += [f"RMT / RMAAT, {REPLAY.get(p, p)}" for p in replays]
  rows = []
  for n in tokens:
    rmt = by[("rmt", None, n)][field]
    values = [by[("rmaat", p, n)][field] for p in replays]
    if rmt is None or None in values:
      continue
    rows.append([_tokens(n), by[("rmt", None, n)]["segments"], *map(fmt, values), fmt(rmt),
                 *(ratio(rmt / v) for v in values)])
  return data, md_table(header, rows)


def paper_table_memory(raw: Raw) -> str:
  data, table = _paper_columns(raw, "memory_mib", "MiB", f1)
  meta = data["meta"]
  note = (f"Model: {meta['config']}; batch {meta['batch']}"
          + (f", {meta['dtype']}" if meta.get("dtype") else "") + f". Memory: {meta['memory']}.")
  return block(table, _paper_source(data), note)


def paper_table_time(raw: Raw) -> str:
  data, table = _paper_columns(raw, "step_s", "s", f3)
  rng = sorted({r["timed_dropout_rng"] for r in data["rows"]})
  return block(table, _paper_source(data), f"Median step time; dropout bits `{'`, `'.join(rng)}`.")


def segment_memory(raw: Raw) -> str:
  data = raw.json("segment_memory.json")
  bptt = {int(k): v for k, v in data["bptt_temp_mib"].items()}
  (t0, m0), (t1, m1) = sorted(bptt.items())[0], sorted(bptt.items())[-1]
  amrb = {(r["layers"], r["dropout"]): r["temp_mib"] for r in data["amrb_temp_mib"]}
  whole = {r["layers"]: r["temp_mib"] for r in data["amrb_segment_replay_temp_mib"]}
  layers = sorted({k[0] for k in amrb})
  rows = [[n, *(f1(amrb.get((n, d))) for d in sorted({k[1] for k in amrb}, reverse=True)),
           f1(whole.get(n))] for n in layers]
  dropouts = sorted({k[1] for k in amrb}, reverse=True)
  note = (f"BPTT temp: {m0:.1f} MiB at {t0} segments, {m1:.1f} at {t1}: "
          f"{(m1 - m0) / (t1 - t0):.1f} MiB per segment. Batch {data['batch']}.")
  return block(md_table(["layers"] + [f"AMRB, block replay, dropout {d} (MiB)" for d in dropouts]
                        + ["AMRB, whole-segment replay (MiB)"], rows),
               Source(["segment_memory.json"], [meta_record(data["meta"])],
                      rerun="python -m experiments.benchmarks.segment_memory"), note)


# ----------------------------------------------------------------------------- speed


def memory_scaling_time(raw: Raw) -> str:
  data = raw.json("memory_scaling.json")
  step = {(r["mode"], r["segments"]): r["step_s"] for r in data["rows"] if r.get("step_s")}
  rows = [[t, f3(step[("bptt", t)]), f3(step[("amrb", t)]),
           ratio(step[("amrb", t)] / step[("bptt", t)])]
          for t in sorted({t for _, t in step}) if ("bptt", t) in step and ("amrb", t) in step]
  return block(md_table(["segments", "BPTT step (s)", "AMRB step (s)", "AMRB / BPTT"], rows),
               Source(["memory_scaling.json"], [meta_record(data["meta"])],
                      rerun="python -m experiments.benchmarks.memory_scaling"))


def train_throughput(raw: Raw) -> str:
  data = raw.json("train_throughput.json")
  rows = [[r["config"], f"{r['params'] / 1e6:.2f}M", r["batch"], f3(r["step_s"]),
           f1(r["examples_per_s"]), f"{r['tokens_per_s']:,.0f}"] for r in data["rows"]]
  return block(md_table(["config", "parameters", "batch", "step (s)", "examples/s",
                         "tokens/s"], rows),
               Source(["train_throughput.json"], [meta_record(data["meta"])] + data["rows"],
                      rerun="python -m experiments.benchmarks.train_throughput"))


def dropout_rng_time(raw: Raw) -> str:
  names = [f"train_throughput_listops_cpu_b32_{rng}.json" for rng in ("auto", "rbg")]
  files = [raw.json(n) for n in names]
  rows = [[f"`{d['meta']['dropout_rng']}`", r["config"] + f" `:{d['meta']['preset']}`",
           r["batch"], f3(r["step_s"])] for d in files for r in d["rows"]]
  return block(md_table(["`model.dropout_rng`", "config", "batch", "step (s)"], rows),
               Source(names, [meta_record(d["meta"]) for d in files] + [
                   r for d in files for r in d["rows"]],
                      rerun="python -m experiments.benchmarks.train_throughput --batch 32 "
                      "--configs lra_listops --preset cpu --dropout_rng auto --tag "
                      "listops_cpu_b32_auto (and rbg)"))


def profile_step(raw: Raw) -> str:
  names = ["profile_step_text_bptt.json", "profile_step_retrieval_amrb.json"]
  rows, records = [], []
  for name in names:
    data = raw.json(name)
    ops = sorted(data["ms_per_step"].items(), key=lambda kv: -kv[1])[:3]
    rows.append([data["config"], f"{data['total_ms']:.0f}", data["steps"],
                 "; ".join(f"`{k}` {v:.0f} ({100 * v / data['total_ms']:.0f} %)"
                           for k, v in ops)])
    if "meta" in data:
      records.append(meta_record(data["meta"]))
    else:  # older files keep no date; their Markdown twin, written by the same run, does
      head = raw.text(name.replace(".json", ".md")).splitlines()[0]
      records.append({"date": re.search(r"\((\d{4}-\d\d-\d\d[T\d:]*)", head).group(1)})
  return block(md_table(["step (one CPU core)", "ms of XLA operations per step", "steps (mean)",
                         "largest operation kinds, ms (share)"], rows),
               Source(names, records,
                      rerun="python -m experiments.benchmarks.profile_step --tag text_bptt; "
                      "... --task retrieval --mode amrb --batch 4 --tag retrieval_amrb"))


# ----------------------------------------------------------------------------- JAX vs torch


COMPARE_MEMORY = "compare_memory_cpu_same_metric.json"


def _compare_memory_mib(raw: Raw) -> dict[tuple[str, str, int], float]:
  """(framework, mode, T) -> MiB: the same metric in both frameworks."""
  return {(r["framework"], r["mode"], r["segments"]): r["memory_bytes"] / MIB
          for r in raw.json(COMPARE_MEMORY)["rows"]}


def compare_memory_figures(raw: Raw) -> dict[str, dict[str, float]]:
  """bptt_segment: MiB per added segment (least squares over T); amrb_peak: the largest AMRB
  step; bptt_over_amrb: at the most segments. Each {framework: value}."""
  mem = _compare_memory_mib(raw)
  ts = sorted({k[2] for k in mem})
  frameworks = ("jax", "torch")
  return {"bptt_segment": {f: slope(ts, [mem[(f, "bptt", t)] for t in ts]) for f in frameworks},
          "amrb_peak": {f: max(mem[(f, "amrb", t)] for t in ts) for f in frameworks},
          "bptt_over_amrb": {f: mem[(f, "bptt", ts[-1])] / mem[(f, "amrb", ts[-1])]
                             for f in frameworks}}


def compare_memory(raw: Raw) -> str:
  name = COMPARE_MEMORY
  data = raw.json(name)
  mem = _compare_memory_mib(raw)
  ts = sorted({k[2] for k in mem})
  rows = [[t, *(f1(mem[(f, m, t)]) for m in ("bptt", "amrb") for f in ("jax", "torch"))]
          for t in ts]
  figures = compare_memory_figures(raw)
  per, peak, last = (figures[k] for k in ("bptt_segment", "amrb_peak", "bptt_over_amrb"))
  summary = md_table(["", "JAX", "PyTorch port", "JAX / port"], [
      ["BPTT, MiB per added segment (least squares)", f1(per["jax"]), f1(per["torch"]),
       ratio(per["jax"] / per["torch"])],
      ["AMRB peak (MiB)", f1(peak["jax"]), f1(peak["torch"]), ratio(peak["jax"] / peak["torch"])],
      [f"BPTT / AMRB at {ts[-1]} segments", ratio(last["jax"]), ratio(last["torch"]), "-"]])
  meta = data["meta"]
  table = md_table(["segments", "JAX BPTT (MiB)", "port BPTT (MiB)", "JAX AMRB (MiB)",
                    "port AMRB (MiB)"], rows)
  note = (f"Task: {', '.join(meta['tasks'])}; batch {meta['batch']}, segments of "
          f"{meta['segment_len']} tokens, {meta['dtype']}.")
  return block(table + "\n\n" + summary,
               Source([name], [meta_record(meta)],
                      rerun="python -m experiments.benchmarks.compare_memory --device cpu "
                      "--tasks text --segments 2 4 8 --batch 2 --repeats 3 --tag same_metric"),
               note)


def _mode(r: dict) -> str:
  if r["mode"] != "amrb":
    return r["mode"].upper()
  return f"AMRB, {REPLAY.get(r['jax_amrb_replay'], r['jax_amrb_replay'])}"


def _step_time(raw: Raw, name: str) -> str:
  data = raw.json(name)
  rows = [[r["task"], r["segments"], r.get("attention", "astro"), _mode(r),
           f3(r["jax_median_s"]), f3(r["torch_median_s"]), ratio(r["ratio_of_medians"]),
           ratio(r["pair_ratio_median"])] for r in data["rows"]]
  meta = data["meta"]
  note = (f"Batch {meta['batch']}, {meta['dtype']}, {meta['threads']['threads']} thread(s) in "
          f"both frameworks, {meta['repeats']} interleaved pairs per row; JAX dropout bits "
          f"`{meta['jax_dropout_rng']}`. 1-min load average {meta['load_average_before'][0]} "
          f"before, {meta['load_average_after'][0]} after, on {meta['cpu_count']} cores.")
  return block(md_table(["task", "T", "attention", "mode", "JAX (s)", "port (s)",
                         "JAX / port (medians)", "JAX / port (median of pairs)"], rows),
               Source([name], [meta_record(meta)]), note)


def step_time(raw: Raw) -> str:
  return _step_time(raw, "step_time_cpu1.json")


def step_time_rmt(raw: Raw) -> str:
  return _step_time(raw, "step_time_rmt_cpu1.json")


def step_time_rmaat_retrieval(raw: Raw) -> str:
  return _step_time(raw, "step_time_rmaat_retrieval_cpu1.json")


# ----------------------------------------------------------------------------- data


def generators(raw: Raw) -> str:
  default, full = raw.json("data_throughput.json"), raw.json("data_throughput_full.json")
  g, h = default["generators"], full["generators"]
  sizes = re.search(r"wrote (\d+) train / (\d+) val / (\d+) test", h["listops_full_cli_output"])
  runs = ", ".join(f"{x:.0f}" for x in h["pathfinder_hard_images_per_s_1_process_incl_png_runs"])
  rows = [
      [f"ListOps, the CLI, {' / '.join(f'{int(n):,}' for n in sizes.groups())} trees",
       f"{h['listops_full_wall_s']:.1f} s, {h['listops_full_ms_per_tree']:.3f} ms per tree"],
      ["ListOps, in-process", f"{g['listops_ms_per_tree']:.3f} ms per tree"],
      [f"Pathfinder hard, the CLI, 1 process, {h['pathfinder_num']:,} images with PNG writing",
       f"{h['pathfinder_hard_images_per_s_1_process_incl_png_median_of_3']:.0f} images/s "
       f"(median of {runs})"],
      [f"Pathfinder hard, the CLI, 2 workers, {h['pathfinder_workers_num']:,} images with PNG",
       f"{h['pathfinder_hard_images_per_s_2_workers_incl_png']:.0f} images/s"],
      ["Pathfinder hard, in-process, 1 core, no PNG",
       f"{g['pathfinder_hard_images_per_s_1_core']:.0f} images/s"],
      ["Pathfinder hard, the CLI, 2 workers, with PNG (a shorter run)",
       f"{g['pathfinder_hard_images_per_s_2_workers_incl_png']:.0f} images/s"]]
  return block(md_table(["generator run", "measured"], rows),
               Source(["data_throughput_full.json", "data_throughput.json"],
                      [full["meta"], default["meta"]]))


def pipelines(raw: Raw) -> str:
  data = raw.json("data_throughput.json")
  rows = [[f"{r['task']} ({r['train_records']:,})", r["num_workers"], f"{r['before']:,.0f}",
           f"**{r['after']:,.0f}**", f"{r['after'] / r['before']:.1f}x",
           "yes" if r["same_batches"] else "**no**"] for r in data["pipelines"]]
  return block(md_table(["task (train records)", "`data.num_workers`",
                         "per-record loader (examples/s)", "batched loader (examples/s)",
                         "speed-up", "same batches"], rows),
               Source(["data_throughput.json"], [data["meta"]]))


def array_record_reads(raw: Raw) -> str:
  data = raw.json("data_throughput.json")
  rows = [[f"{r['records_in_file']:,}", f1(r["us_per_record_one_per_call"]),
           f1(r["us_per_record_32_per_call"])] for r in data["reads"]]
  return block(md_table(["records in the ArrayRecord file", "µs per record, 1 per read call",
                         "µs per record, 32 per read call"], rows),
               Source(["data_throughput.json"], [data["meta"]]))


def generator_stats_listops(raw: Raw) -> str:
  data = raw.json("generator_stats_listops.json")
  rows = []
  for r in data["rows"]:
    shares = r["label_shares"]
    rows.append([r["generator"], f"{100 * r['acceptance']:.2f} %",
                 f"{r['length_mean']:.0f} / {r['length_median']:.0f}",
                 f"{100 * shares[0]:.1f} / {100 * shares[-1]:.1f} %",
                 f"{100 * min(shares[1:-1]):.1f}-{100 * max(shares[1:-1]):.1f} %"])
  return block(md_table(["generator", "root draws accepted", "length mean / median",
                         "labels 0 / 9", "labels 1-8"], rows),
               Source(["generator_stats_listops.json"], [data["meta"]]))


def generator_stats_pathfinder(raw: Raw) -> str:
  data = raw.json("generator_stats_pathfinder.json")
  rows = []
  for r in data["rows"]:
    success = r.get("pair_success_rate")
    rows.append([r["generator"], f1(r["mean_pixel"]), f"{100 * r['nonzero_share']:.1f} %",
                 f"{r['distractors_placed_mean']:.2f} of {r['distractor_slots']}",
                 "-" if success is None else f"{100 * success:.2f} %",
                 "yes" if r["images_reaching_255"] == r["images"] else "no",
                 f"{100 * r['label_1_share']:.1f} %"])
  return block(md_table(["generator", "mean pixel", "non-zero pixels", "distractors placed",
                         "target pairs that succeed", "every image reaches 255",
                         "label 1"], rows),
               Source(["generator_stats_pathfinder.json"], [data["meta"]]))


# ----------------------------------------------------------------------------- reliability


def fault_injection(raw: Raw) -> str:
  data = raw.json("fault_injection.json")

  def redone(r: dict) -> str:
    return "-" if r["steps_redone_mean"] is None else (
        f"{r['steps_redone_mean']} / {r['steps_redone_max']}")

  rows = [[r["fault"], r["trials"], f"{r['survived']}/{r['trials']}", redone(r),
           r["checkpoints_lost"], r["seconds"], r["notes"]] for r in data["summary"]]
  train = ", ".join(f"`{k}={v}`" for k, v in data["train"].items())
  return block(md_table(["fault", "trials", "survived", "steps redone (mean / max)",
                         "checkpoints lost", "time (s)", "notes"], rows),
               Source(["fault_injection.json"], [data],
                      rerun="python -m experiments.reliability.fault_injection --trials 10 "
                      "--others 3"),
               f"Config: tiny generated ListOps model, {train}, seed {data['seed']}.")


def cli_mistakes(raw: Raw) -> str:
  data = raw.json("cli_mistakes.json")
  rows = [[name, c["exit_status"], "yes" if c["traceback"] else "no", len(c["files_written"]),
           cell("<br>".join(c["error_lines"]))] for name, c in data["cases"].items()]
  return block(md_table(["mistake", "exit status", "traceback", "files written",
                         "what it prints"], rows),
               Source(["cli_mistakes.json"], [data["meta"]]))


def config_properties(raw: Raw) -> str:
  name = "config_properties_campaign.txt"
  text = raw.text(name)
  head = text.splitlines()[0]
  rows = [[f"`{test}`", int(ok), int(bad)] for test, ok, bad in re.findall(
      r"::(\w+):\n(?:.*\n)*?\s+- (\d+) passing, (\d+) failing", text)]
  command = re.search(r"^# (HYPOTHESIS_PROFILE.*?)\s+\(", text, re.M).group(1)
  record = {"date": re.match(r"# (\d{4}-\d\d-\d\d)", head).group(1),
            "machine": re.search(r", (CPU-2[^,]*),", head).group(1),
            "commit": re.search(r"commit (\w+)", head).group(1), "command": command}
  return block(md_table(["property test (tests/test_config_properties.py)", "examples passing",
                         "failing"], rows), Source([name], [record]))


def collective_stress(raw: Raw) -> str:
  data = raw.json("collective_stress.json")
  rows = [[r["try"], r["exit_status"], "yes" if r["collective_timeout"] else "no",
           f1(r["seconds"]), f1(r["load_average"])] for r in data["rows"]]
  meta = data["meta"]
  note = (f"{meta['busy_processes']} busy-loop processes on {meta['cores']} cores; validation "
          f"over {meta['eval_examples']} examples.")
  return block(md_table(["try", "exit status", "collective timeout", "wall (s)",
                         "1-min load average"], rows),
               Source(["collective_stress.json"], [meta],
                      rerun="python -m experiments.reliability.collective_stress"), note)


def multiprocess_check(raw: Raw) -> str:
  data = raw.json("multiprocess_check.json")
  runs = data["runs"]
  labels = {"one": "1 process x 4 devices", "two": "2 processes x 2 devices"}
  steps = sorted(runs["one"]["train_loss_logged"], key=int)
  rows = [[labels.get(k, k), *(f"{r['train_loss_logged'][s]:.7f}" for s in steps),
           f"{r['test_loss']:.7f}", f3(r["test_accuracy"]), r["best_step"]]
          for k, r in runs.items()]
  same = all(data["identical"].values())
  note = (f"Largest relative difference: {data['max_relative_difference']:g}; steps, losses, "
          f"test accuracy and best step {'identical' if same else '**not** identical'}.")
  return block(md_table(["run"] + [f"train loss, step {s}" for s in steps]
                        + ["test loss", "test accuracy", "best step"], rows),
               Source(["multiprocess_check.json"], [data["meta"]]), note)


def no_tensorflow(raw: Raw) -> str:
  data = raw.json("no_tensorflow.json")
  venv, run = data["meta"]["venv"], data["run"]
  packages = ", ".join(f"{k} {v}" for k, v in venv.items()
                       if k not in ("python", "tensorflow_importable", "import_tensorflow"))
  rows = [["`import tensorflow` in the environment", venv["import_tensorflow"]],
          ["packages", packages],
          ["exit status", run["exit_status"]],
          ["generated / prepared", f"{', '.join(run['generated'])} / {', '.join(run['prepared'])}"],
          ["checkpoints (best)", f"{', '.join(run['checkpoints'])} ({', '.join(run['best'])})"],
          ["TensorBoard train_loss read back at steps",
           ", ".join(str(s) for s, _ in run["event_train_loss"])],
          ["test accuracy", f3(run["results"]["test_accuracy"])]]
  return block(md_table(["", "result"], rows), Source(["no_tensorflow.json"], [data["meta"]]))


BLOCKS: dict[str, Callable[[Raw], str]] = {
    f.__name__: f for f in (
        quickstart, learning_curves, recall_distance, recall_diagnosis, recall_length,
        recall_capacity, model_checks, memory_scaling, paper_table_memory, segment_memory,
        recall_memory, paper_table_time, memory_scaling_time, train_throughput,
        dropout_rng_time, profile_step, compare_memory, step_time, step_time_rmaat_retrieval,
        step_time_rmt, generators, pipelines, array_record_reads, generator_stats_listops,
        generator_stats_pathfinder,
        fault_injection, cli_mistakes, config_properties, collective_stress,
        multiprocess_check, no_tensorflow)}
