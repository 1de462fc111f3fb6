"""Compiled memory of a training gradient vs number of segments, for bptt / remat / amrb.

    python -m experiments.benchmarks.memory_scaling [--segments 2 4 8 16 32 64]
        [--time_segments 8 16]
    python -m experiments.benchmarks.memory_scaling --replot   # redraw the plot from the saved JSON

Model: d=128, 4 heads, 2 layers, d_ff=512, 1 memory token, astro attention, segments of
256 tokens, batch 8 (issue 2). Memory is XLA's compiled buffer assignment
(`memory_analysis()`: temp = activations + workspace; total adds parameters, inputs and
gradients), so it is the same on any backend that compiles the same program; step time is
the median of `--runs` steps after a warm-up, on whatever device JAX sees.

Writes experiments/results/memory_scaling.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform

import jax

from experiments.results_store import RESULTS_DIR, jax_machine, provenance, provenance_line
from rmaat_jax.memory import gradient_step_profile

MODES = ("bptt", "remat", "amrb")
MODEL = dict(vocab_size=256, num_classes=10, pad_id=0, dual_encoder=False,
             num_memory_tokens=1, emb_dim=128, num_heads=4,
             num_layers=2, mlp_dim=512, dropout_rate=0.1, dropout_rng="rbg", attention="astro",
             position="projected", retention="paper", pool="memory")
SEGMENT_LEN, BATCH = 256, 8
MB = 2.0 ** 20


def model_config(mode: str, num_segments: int) -> dict:
  return {**MODEL, "backprop": mode, "num_segments": num_segments,
          "seq_len": SEGMENT_LEN * num_segments}


def measure(segments: list[int], time_segments: list[int], runs: int) -> list[dict]:
  rows = []
  for num_segments in segments:
    for mode in MODES:
      timed = num_segments in time_segments and mode != "remat"
      profile = gradient_step_profile(model_config(mode, num_segments), BATCH,
                                      time_runs=runs if timed else 0)
      rows.append({"mode": mode, "segments": num_segments, **profile})
      print(f"{mode:5s} T={num_segments:3d} temp={profile['temp'] / MB:9.1f} MiB "
            f"total={profile['total'] / MB:9.1f} MiB"
            + (f" step={profile['step_s']:.3f} s" if timed else ""), flush=True)
  return rows


def _row(rows, mode, num_segments):
  return next(r for r in rows if r["mode"] == mode and r["segments"] == num_segments)


def summary(rows: list[dict], segments: list[int], time_segments: list[int]) -> str:
  lines = ["| segments | tokens | bptt temp (MiB) | remat temp (MiB) | amrb temp (MiB) "
           "| bptt / amrb |", "|---|---|---|---|---|---|"]
  for t in segments:
    temps = [_row(rows, m, t)["temp"] / MB for m in MODES]
    lines.append(f"| {t} | {t * SEGMENT_LEN} | " + " | ".join(f"{x:.1f}" for x in temps)
                 + f" | {temps[0] / temps[2]:.2f}x |")
  lines += ["", "| segments | bptt step (s) | amrb step (s) | amrb / bptt |", "|---|---|---|---|"]
  for t in time_segments:
    bptt, amrb = _row(rows, "bptt", t)["step_s"], _row(rows, "amrb", t)["step_s"]
    lines.append(f"| {t} | {bptt:.3f} | {amrb:.3f} | {amrb / bptt:.2f}x |")
  first = min(segments)
  amrb_first = _row(rows, "amrb", first)["temp"]
  lines.append("")
  for t in sorted({32, max(segments)} & set(segments)):
    lines.append(f"AMRB temp at {t} segments / at {first}: "
                 f"{_row(rows, 'amrb', t)['temp'] / amrb_first:.3f}x (goal <= 1.3x)")
  if 16 in segments:
    lines.append("BPTT / AMRB temp at 16 segments: "
                 f"{_row(rows, 'bptt', 16)['temp'] / _row(rows, 'amrb', 16)['temp']:.2f}x "
                 "(paper: 4.41x)")
  return "\n".join(lines)


STYLES = {"bptt": dict(marker="o", linestyle="-", color="tab:red"),
          "remat": dict(marker="s", linestyle="--", color="tab:green", markersize=9,
                        markerfacecolor="none"),
          "amrb": dict(marker="d", linestyle=":", color="tab:blue")}


def plot(rows: list[dict], segments: list[int], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for mode in MODES:  # remat and amrb nearly coincide: hollow squares around diamonds
    ax.plot(segments, [_row(rows, mode, t)["temp"] / MB for t in segments],
            label=mode, **STYLES[mode])
  if 16 in segments:
    for mode, offset in zip(MODES, (10, 12, -16), strict=True):
      value = _row(rows, mode, 16)["temp"] / MB
      ax.annotate(f"{mode} {value:.1f} MiB", (16, value), textcoords="offset points",
                  xytext=(6, offset), fontsize=8, color=STYLES[mode]["color"])
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xticks(segments, [str(t) for t in segments])
  ax.set_xlabel(f"segments of {SEGMENT_LEN} tokens")
  ax.set_ylabel("compiled temp memory of a gradient step (MiB)")
  ax.set_title("RMAAT training memory: d=128, 2 layers, batch 8\n"
               "(XLA buffer assignment: does not depend on machine load)", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--segments", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
  parser.add_argument("--time_segments", type=int, nargs="*", default=[8])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--out", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--replot", action="store_true",
                      help="only redraw memory_scaling.png from memory_scaling.json in --out")
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: JAX's accelerator, "
                      "else the CPU and its cores)")
  args = parser.parse_args()
  if args.replot:
    saved = json.loads((args.out / "memory_scaling.json").read_text())
    segments = sorted({r["segments"] for r in saved["rows"]})
    plot(saved["rows"], segments, args.out / "memory_scaling.png")
    return

  stamp = provenance(args.machine or jax_machine(),
                     module=__spec__.name)
  rows = measure(args.segments, args.time_segments, args.runs)
  table = summary(rows, args.segments, args.time_segments)
  print(table)
  device = jax.devices()[0]
  meta = {**stamp, "device": str(device.device_kind),
          "platform": device.platform, "host": platform.processor() or platform.machine(),
          "jax": jax.__version__, "model": MODEL, "segment_len": SEGMENT_LEN,
          "batch": BATCH}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "memory_scaling.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                           indent=1))
  (args.out / "memory_scaling.md").write_text(
      f"# memory_scaling ({meta['date']}, {meta['platform']}: {meta['device']}, "
      f"jax {meta['jax']})\n\n{table}\n\n{provenance_line(meta)}\n")
  plot(rows, args.segments, args.out / "memory_scaling.png")


if __name__ == "__main__":
  main()
