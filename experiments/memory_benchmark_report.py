"""Tables (Markdown) and the plot of experiments/results/memory_benchmark.json.

`write(json_path, out_dir)` is what `python -m experiments.memory_benchmark` ends with;
`--report` redraws both from the JSON alone.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict

import numpy as np

from rmaat_jax.models.retention import retention_factors


def _rows(payload: dict, part: str) -> list[dict]:
  return [r for r in payload["rows"] if r["part"] == part]


def _acc(row: dict | None) -> str:
  if row is None:
    return "-"
  if row.get("test_accuracy") is None:
    if row.get("refused"):
      return "(refused)"
    return "(chance)" if row.get("not_trained") else "-"
  return f"{row['test_accuracy']:.3f}"


def _by(rows: list[dict], *fields: str) -> dict:
  return {tuple(r[f] for f in fields): r for r in rows}


def distance_table(payload: dict) -> list[str]:
  rows = _rows(payload, "distance")
  if not rows:
    return []
  segments = sorted({r["segments"] for r in rows})
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  cell = _by(rows, "variant", "segments")
  first = rows[0]
  lines = [f"### Distance: test accuracy against T segments of {first['segment_len']} tokens",
           "", f"One key -> value pair in segment 1, the query at the end of segment T; "
           f"chance {first['chance']:.2f}. Every run: {first['steps']} steps x batch "
           f"{first['batch']}, the `:cpu` model (d 64, 2 heads, 1 layer).", "",
           "| model | " + " | ".join(f"T={t} ({t * first['segment_len']})" for t in segments)
           + " |", "|---|" + "---|" * len(segments)]
  for variant in variants:
    lines.append(f"| {variant} | " + " | ".join(_acc(cell.get((variant, t)))
                                                 for t in segments) + " |")
  if any(r.get("not_trained") for r in rows):
    lines += ["", "(chance): not trained, because the same model stayed at chance at the two "
              "shorter distances before (a memory that carries nothing across T segments "
              "carries nothing across more; `--stop_after_chance 0` trains them)."]
  return lines + [""]


def memory_table(payload: dict) -> list[str]:
  rows = _rows(payload, "distance")
  long_rows = _rows(payload, "memory")
  if not rows and not long_rows:
    return []
  lines = ["### Training-step memory (compiled, MiB) against T", "",
           "XLA's buffer assignment of one gradient step at batch "
           f"{rows[0]['batch'] if rows else 32} (parameters, gradients, inputs, activations, "
           "workspace). RMAAT trains with AMRB; `RMAAT in BPTT` is the same step with plain "
           "backprop; RMT and RLT train with BPTT.", "",
           "| T (tokens) | RMAAT (AMRB) | RMAAT in BPTT | RMT (BPTT) | RLT (BPTT) |",
           "|---|---|---|---|---|"]
  cell = _by(rows, "variant", "segments")
  fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
  for t in sorted({r["segments"] for r in rows}):
    astro = cell.get(("RMAAT none pre-LN", t), {})
    lines.append(
        f"| {t} ({t * rows[0]['segment_len']}) | {fmt(astro.get('step_memory_mib'))} | "
        f"{fmt(astro.get('bptt_step_memory_mib'))} | "
        f"{fmt(cell.get(('RMT pre-LN', t), {}).get('step_memory_mib'))} | "
        f"{fmt(cell.get(('RLT pre-LN', t), {}).get('step_memory_mib'))} |")
  long_cell = _by(long_rows, "variant", "segments")
  for t in sorted({r["segments"] for r in long_rows}):
    amrb = long_cell.get(("RMAAT pre-LN AMRB", t), {}).get("step_memory_mib")
    bptt = long_cell.get(("RMAAT pre-LN BPTT", t), {}).get("step_memory_mib")
    lines.append(f"| {t} ({long_cell[next(k for k in long_cell if k[1] == t)]['tokens']}) | "
                 f"{fmt(amrb)} | {fmt(bptt)} | (not trained) | |")
  return lines + [""]


def capacity_table(payload: dict) -> list[str]:
  rows = _rows(payload, "capacity")
  if not rows:
    return []
  pairs = sorted({r["pairs"] for r in rows})
  cell = _by(rows, "segments", "memory_tokens", "pairs")
  lines = ["### Capacity: test accuracy against the number of stored pairs", "",
           f"RMAAT (`none`, pre-LN); chance {rows[0]['chance']:.2f}.", "",
           "| T | memory tokens | " + " | ".join(f"{p} pair{'s' * (p > 1)}" for p in pairs)
           + " |", "|---|---|" + "---|" * len(pairs)]
  for t, m in sorted({(r["segments"], r["memory_tokens"]) for r in rows}):
    lines.append(f"| {t} | {m} | " + " | ".join(_acc(cell.get((t, m, p))) for p in pairs)
                 + " |")
  return lines + [""]


def length_table(payload: dict) -> list[str]:
  rows = _rows(payload, "length")
  if not rows:
    return []
  lengths = sorted({r["eval_segments"] for r in rows})
  tokens = {r["eval_segments"]: r["eval_tokens"] for r in rows}
  cell = _by(rows, "variant", "eval_segments")
  lines = [f"### Train short, recall long: trained at T = {rows[0]['segments']}, evaluated at "
           "T segments", "", f"Forward only, {rows[0]['num_test_examples']} test examples "
           "per length (`--eval_only --eval_other_length`).", "",
           "| model | " + " | ".join(f"T={t} ({tokens[t]})" for t in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  for variant in dict.fromkeys(r["variant"] for r in rows):
    lines.append(f"| {variant} | " + " | ".join(_acc(cell.get((variant, t))) for t in lengths)
                 + " |")
  refused = next((r["refused"] for r in rows if r.get("refused")), None)
  if refused:
    lines += ["", f"(refused): the model cannot be built at that length: {refused}"]
  return lines + [""]


def diagnosis_table(payload: dict) -> list[str]:
  rows = _rows(payload, "diagnosis")
  if not rows:
    return []
  lines = ["### Why `paper` loses the fact", "",
           "`backward X`: the forward uses the row's retention, the backward scales dL/dmem by "
           "X's factors (`model.retention_backward`). What the first segment writes reaches "
           "segment T scaled by the product of RF(1..T-1, T), and so does the gradient back "
           "to it.", "", "| T | product of RF(t, T), paper | model | steps | test accuracy |",
           "|---|---|---|---|---|"]
  for t in sorted({r["segments"] for r in rows}):
    reach = float(np.prod(retention_factors(t, "paper")[:-1]))
    reference = [r for r in _rows(payload, "distance") if r["segments"] == t
                 and r["model"] == "rmaat" and r["retention"] in ("paper", "none")]
    for r in reference + [r for r in rows if r["segments"] == t]:
      lines.append(f"| {t} | {reach:.2g} | {r['variant']} | {r['steps']} | {_acc(r)} |")
  return lines + [""]


def table(payload: dict) -> str:
  meta = payload.get("meta", {})
  head = [f"# memory_benchmark (latest invocation {meta.get('date')}, {meta.get('machine')}, "
          f"commit {meta.get('commit')})", "", "Each row's own date, machine and commit are in "
          "memory_benchmark.json.", ""]
  return "\n".join(head + distance_table(payload) + memory_table(payload)
                   + capacity_table(payload) + length_table(payload)
                   + diagnosis_table(payload))


def plot(payload: dict, path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  (dist, mem), (cap, length) = axes
  curves = defaultdict(list)
  for r in _rows(payload, "distance"):
    if r["test_accuracy"] is not None:
      curves[r["variant"]].append((r["segments"], r["test_accuracy"]))
  for variant, points in curves.items():
    style = ":" if "post-LN" in variant else "-"
    dist.plot(*_xy(points), style, marker="o", label=variant)
  dist.set(xscale="log", xlabel="segments T (64 tokens each)", ylabel="test accuracy",
           title="Distance: one fact carried across T - 1 boundaries", ylim=(0, 1.05))
  memory = defaultdict(list)
  for r in _rows(payload, "distance"):
    if r["variant"] == "RMAAT none pre-LN":
      memory["RMAAT, AMRB"].append((r["segments"], r["step_memory_mib"]))
      memory["RMAAT, BPTT"].append((r["segments"], r["bptt_step_memory_mib"]))
    if r["variant"] == "RMT pre-LN":
      memory["RMT, BPTT"].append((r["segments"], r["step_memory_mib"]))
  for r in _rows(payload, "memory"):
    memory["RMAAT, " + r["variant"].split()[-1]].append((r["segments"], r["step_memory_mib"]))
  for variant, points in memory.items():
    mem.plot(*_xy(points), marker="o", label=variant)
  mem.set(xscale="log", yscale="log", xlabel="segments T", ylabel="MiB per training step",
          title="Compiled training-step memory")
  for (t, m), points in sorted(_group(_rows(payload, "capacity"), "segments",
                                      "memory_tokens").items()):
    cap.plot(*_xy((r["pairs"], r["test_accuracy"]) for r in points), marker="o",
             label=f"T={t}, {m} memory token{'s' * (m > 1)}")
  cap.set(xscale="log", xlabel="stored pairs", ylabel="test accuracy", ylim=(0, 1.05),
          title="Capacity")
  for variant, points in _group(_rows(payload, "length"), "variant").items():
    length.plot(*_xy((r["eval_tokens"], r["test_accuracy"]) for r in points
                     if r["test_accuracy"] is not None), marker="o", label=variant[0])
  length.set(xscale="log", xlabel="tokens per example at evaluation", ylabel="test accuracy",
             ylim=(0, 1.05), title="Trained at T = 8 (512 tokens), evaluated longer")
  for ax in (dist, cap, length):
    ax.axhline(0.1, ls="--", color="gray", label="chance")
  # Ticks at the measured values, written out (a log axis would say 2x10^0).
  for ax, part, field in ((dist, "distance", "segments"), (mem, None, "segments"),
                          (cap, "capacity", "pairs")):
    values = sorted({r[field] for r in payload["rows"]
                     if (r["part"] == part if part else r["part"] in ("distance", "memory"))})
    if values:
      ax.set_xticks(values, [str(v) for v in values])
      ax.minorticks_off()
  for ax in axes.flat:
    ax.legend(fontsize=7)
  meta = payload.get("meta", {})
  fig.suptitle(f"Memory recall at the :cpu size ({meta.get('machine')}, {meta.get('date')})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _xy(points) -> tuple[list, list]:
  """Sorted (x, y) pairs as two lists, for plot()."""
  points = sorted(points)
  return [x for x, _ in points], [y for _, y in points]


def _group(rows: list[dict], *fields: str) -> dict:
  groups = defaultdict(list)
  for r in rows:
    groups[tuple(r[f] for f in fields)].append(r)
  return groups


def write(json_path: pathlib.Path, out_dir: pathlib.Path) -> None:
  payload = json.loads(json_path.read_text())
  (out_dir / "memory_benchmark.md").write_text(table(payload) + "\n")
  plot(payload, out_dir / "memory_benchmark.png")
