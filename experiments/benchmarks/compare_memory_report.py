"""Markdown table, summary ratios and plot for compare_memory.py's rows."""

from __future__ import annotations

from pathlib import Path

# The compared tasks and their config modules (shared by the parent and the measurements).
TASKS = {"text": "lra_text", "retrieval": "lra_retrieval"}

MIB = 2.0 ** 20
FRAMEWORKS, MODES = ("jax", "torch"), ("bptt", "amrb")
STYLE = {("jax", "bptt"): ("tab:blue", "--", "o"), ("jax", "amrb"): ("tab:blue", "-", "s"),
         ("torch", "bptt"): ("tab:red", "--", "o"), ("torch", "amrb"): ("tab:red", "-", "s")}


def _find(rows: list[dict], task: str, framework: str, mode: str, t: int) -> dict | None:
  return next((r for r in rows if (r["task"], r["framework"], r["mode"], r["segments"])
               == (task, framework, mode, t)), None)


def _tasks(rows: list[dict]) -> list[str]:
  return list(dict.fromkeys(r["task"] for r in rows))


# The memory figure of each (device, framework): the same kind of measurement - the peak of
# live bytes of one training step, parameters, AdamW state and batch included - in both.
METRICS = {
    ("cpu", "jax"): "XLA buffer assignment of the jitted step (compiled memory_analysis: "
                    "arguments + outputs + temp - aliased), rbg dropout bits",
    ("cpu", "torch"): "torch.profiler profile_memory: peak of live CPU-allocator bytes over "
                      "the step (every tensor, workspace included), after a warm-up step",
    ("gpu", "jax"): "memory_stats()['peak_bytes_in_use']",
    ("gpu", "torch"): "torch.cuda.max_memory_allocated()",
}
# What both frameworks' memory column is, per device, for tables and plots.
COMMON_METRIC = {
    "cpu": "peak live bytes of one training step (CPU): JAX = XLA buffer assignment of the "
           "jitted step (arguments + outputs + temp - aliased; rbg dropout, as on a GPU); "
           "torch = torch.profiler (profile_memory) peak of live allocator bytes over a step "
           "after a warm-up, every tensor and transient workspace included",
    "gpu": "peak live bytes of one training step (GPU runtime peak): JAX = memory_stats()"
           "['peak_bytes_in_use'] (no preallocation), torch = torch.cuda.max_memory_allocated()",
}
SHORT_METRIC = {
    "cpu": {"jax": "XLA buffer assignment", "torch": "profiler peak live bytes"},
    "gpu": {"jax": "peak_bytes_in_use", "torch": "max_memory_allocated"},
}


def table(rows: list[dict], device: str) -> str:
  legend = (f"memory = {COMMON_METRIC[device]}; the same kind of measurement in both "
            "frameworks. above state = memory - (parameters + AdamW state + batch), i.e. "
            "gradients, activations and workspace at the peak. saved = torch only: peak of the "
            "storages autograd saves for backward (saved_tensors_hooks).")
  lines = [legend, "",
           "| task | segments | tokens | framework | mode | memory (MiB) | above state (MiB) "
           "| saved (MiB) | step (s) |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    saved = f"{r['torch_saved_peak'] / MIB:.1f}" if "torch_saved_peak" in r else "-"
    lines.append(f"| {r['task']} | {r['segments']} | {r['seq_len']} | {r['framework']} | "
                 f"{r['mode']} | {r['memory_bytes'] / MIB:.1f} | "
                 f"{r['transient_bytes'] / MIB:.1f} | {saved} | {r['step_s']:.3f} |")
  return "\n".join(lines)


def bptt_slope(rows: list[dict], task: str, framework: str) -> float | None:
  """BPTT memory per segment (bytes): least-squares slope of memory vs segments."""
  points = sorted((r["segments"], r["memory_bytes"]) for r in rows
                  if (r["task"], r["framework"], r["mode"]) == (task, framework, "bptt"))
  if len(points) < 2:
    return None
  n = len(points)
  mean_t = sum(t for t, _ in points) / n
  mean_m = sum(m for _, m in points) / n
  return (sum((t - mean_t) * (m - mean_m) for t, m in points)
          / sum((t - mean_t) ** 2 for t, _ in points))


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
  if a is None or b is None or not b[key]:
    return "n/a"
  return f"{a[key] / b[key]:.2f}x"


def summary(rows: list[dict], segments: list[int]) -> str:
  t = 16 if 16 in segments else max(segments)
  tokens = next((r["seq_len"] for r in rows if r["segments"] == t), 512 * t)
  lines = [f"Summary at {t} segments ({tokens} tokens per document):", "",
           "| task | framework | BPTT/AMRB memory | BPTT/AMRB above state "
           "| AMRB/BPTT step time |", "|---|---|---|---|---|"]
  for task in _tasks(rows):
    for fw in FRAMEWORKS:
      bptt, amrb = _find(rows, task, fw, "bptt", t), _find(rows, task, fw, "amrb", t)
      lines.append(f"| {task} | {fw} | {_ratio(bptt, amrb, 'memory_bytes')} | "
                   f"{_ratio(bptt, amrb, 'transient_bytes')} | "
                   f"{_ratio(amrb, bptt, 'step_s')} |")
  lines += ["", "Paper (GPU peak): BPTT/AMRB 4.41x (Retrieval), 4.31x (Text); goal >= 4.41x.",
            "", "JAX vs torch on the same metric (goals: BPTT per segment <= 1.1x, AMRB peak "
            "<= 1.0x; per segment = least-squares slope of BPTT memory over "
            f"{sorted(segments)} segments):", "",
            "| task | BPTT per segment JAX / torch (MiB) | ratio | AMRB peak JAX / torch (MiB) "
            "| ratio | JAX/torch BPTT memory | JAX/torch step time bptt "
            "| JAX/torch step time amrb |", "|---|---|---|---|---|---|---|---|"]
  for task in _tasks(rows):
    get = lambda fw, mode, task=task: _find(rows, task, fw, mode, t)  # noqa: E731
    slopes = [bptt_slope(rows, task, fw) for fw in FRAMEWORKS]
    per_segment = (" / ".join("n/a" if s is None else f"{s / MIB:.1f}" for s in slopes)
                   + " | " + (f"{slopes[0] / slopes[1]:.2f}x" if None not in slopes
                              and slopes[1] else "n/a"))
    amrb = [get(fw, "amrb") for fw in FRAMEWORKS]
    amrb_mib = " / ".join("n/a" if r is None else f"{r['memory_bytes'] / MIB:.1f}" for r in amrb)
    lines.append(
        f"| {task} | {per_segment} | {amrb_mib} | {_ratio(*amrb, 'memory_bytes')} | "
        f"{_ratio(get('jax', 'bptt'), get('torch', 'bptt'), 'memory_bytes')} | "
        f"{_ratio(get('jax', 'bptt'), get('torch', 'bptt'), 'step_s')} | "
        f"{_ratio(get('jax', 'amrb'), get('torch', 'amrb'), 'step_s')} |")
  return "\n".join(lines)


def plot(rows: list[dict], segments: list[int], device: str, meta: dict, path: Path) -> None:
  """Row 1: memory vs segments, row 2: step time vs segments; one column per task."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tasks = _tasks(rows)
  fig, axes = plt.subplots(2, len(tasks), figsize=(max(7.0, 5.5 * len(tasks)), 8.5),
                           squeeze=False)
  for col, task in enumerate(tasks):
    for (fw, mode), (color, line, marker) in STYLE.items():
      found = [(t, _find(rows, task, fw, mode, t)) for t in segments]
      found = [(t, r) for t, r in found if r is not None]
      if not found:
        continue
      xs = [t for t, _ in found]
      metric = (SHORT_METRIC[device][fw] if found[0][1].get("memory_metric")
                == METRICS[device, fw] else "an older, different metric")
      label = f"{fw} {mode} ({metric})"
      axes[0, col].plot(xs, [r["memory_bytes"] / MIB for _, r in found], color=color,
                        linestyle=line, marker=marker, label=label)
      axes[1, col].plot(xs, [r["step_s"] for _, r in found], color=color, linestyle=line,
                        marker=marker, label=f"{fw} {mode}")
    for row, ylabel in enumerate(("peak live memory of a training step (MiB)",
                                  "step time (s)")):
      ax = axes[row, col]
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xticks(segments, [str(t) for t in segments])
      ax.set_xlabel(f"segments of {meta.get('segment_len', 512)} tokens")
      ax.set_ylabel(ylabel)
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=8)
    axes[0, col].set_title(f"{task}, batch {meta['batch']}")
  if device == "gpu":
    note = ("memory, the same metric in both: runtime peak allocated\n(JAX "
            "peak_bytes_in_use, torch.cuda.max_memory_allocated)")
  else:
    note = ("memory, the same metric in both: peak live bytes of the step\n(JAX: XLA buffer "
            "assignment, rbg dropout; torch: torch.profiler peak live allocator bytes)\n"
            "step time: JAX with threefry dropout (the CPU default)")
  if meta.get("machine_note"):
    note += f"\n{meta['machine_note']}"
  if meta.get("commit"):  # the latest invocation's (each row's own, and commands: the JSON)
    note += f"\nlatest run {meta.get('date')}, commit {meta['commit']}"
  fig.suptitle(f"RMAAT training step, {meta['device_name']}, jax {meta['jax']}, torch "
               f"{meta['torch']}\n{note}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
