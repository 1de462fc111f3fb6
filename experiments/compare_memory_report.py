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


def table(rows: list[dict], device: str) -> str:
  if device == "gpu":
    legend = ("memory = runtime peak allocated (JAX peak_bytes_in_use, "
              "torch.cuda.max_memory_allocated): the same measurement in both frameworks.")
  else:
    legend = ("memory (CPU; NOT the same measurement in the two frameworks): JAX = XLA "
              "compiled memory analysis of the jitted step, arguments + outputs + temp - "
              "aliased; activations = XLA temp (activations, gradients, workspace). torch = "
              "peak live saved-for-backward storages (saved_tensors_hooks) + params + grads "
              "+ AdamW state; activations = that saved peak alone.")
  lines = [legend, "",
           "| task | segments | tokens | framework | mode | memory (MiB) | activations (MiB) "
           "| step (s) |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['task']} | {r['segments']} | {r['seq_len']} | {r['framework']} | "
                 f"{r['mode']} | {r['memory_bytes'] / MIB:.1f} | "
                 f"{r['activation_bytes'] / MIB:.1f} | {r['step_s']:.3f} |")
  return "\n".join(lines)


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
  if a is None or b is None or not b[key]:
    return "n/a"
  return f"{a[key] / b[key]:.2f}x"


def summary(rows: list[dict], segments: list[int]) -> str:
  t = 16 if 16 in segments else max(segments)
  lines = [f"Summary at {t} segments ({512 * t} tokens per document):", "",
           "| task | framework | BPTT/AMRB memory | BPTT/AMRB activations "
           "| AMRB/BPTT step time |", "|---|---|---|---|---|"]
  for task in _tasks(rows):
    for fw in FRAMEWORKS:
      bptt, amrb = _find(rows, task, fw, "bptt", t), _find(rows, task, fw, "amrb", t)
      lines.append(f"| {task} | {fw} | {_ratio(bptt, amrb, 'memory_bytes')} | "
                   f"{_ratio(bptt, amrb, 'activation_bytes')} | "
                   f"{_ratio(amrb, bptt, 'step_s')} |")
  lines += ["", "Paper (GPU peak): BPTT/AMRB 4.41x (Retrieval), 4.31x (Text); goal >= 4.41x.",
            "", "| task | JAX/torch AMRB memory | JAX/torch BPTT memory "
            "| JAX/torch step time bptt | JAX/torch step time amrb |", "|---|---|---|---|---|"]
  for task in _tasks(rows):
    get = lambda fw, mode, task=task: _find(rows, task, fw, mode, t)  # noqa: E731
    lines.append(
        f"| {task} | {_ratio(get('jax', 'amrb'), get('torch', 'amrb'), 'memory_bytes')} | "
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
  fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 8), squeeze=False)
  for col, task in enumerate(tasks):
    for (fw, mode), (color, line, marker) in STYLE.items():
      found = [(t, _find(rows, task, fw, mode, t)) for t in segments]
      found = [(t, r) for t, r in found if r is not None]
      if not found:
        continue
      xs = [t for t, _ in found]
      label = f"{fw} {mode}"
      axes[0, col].plot(xs, [r["memory_bytes"] / MIB for _, r in found], color=color,
                        linestyle=line, marker=marker, label=label)
      axes[1, col].plot(xs, [r["step_s"] for _, r in found], color=color, linestyle=line,
                        marker=marker, label=label)
    for row, ylabel in enumerate(("memory per training step (MiB)", "step time (s)")):
      ax = axes[row, col]
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xticks(segments, [str(t) for t in segments])
      ax.set_xlabel("segments of 512 tokens")
      ax.set_ylabel(ylabel)
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=8)
    axes[0, col].set_title(f"{task}, batch {meta['batch']}")
  if device == "gpu":
    note = "memory: runtime peak allocated (both frameworks)"
  else:
    note = ("CPU memory: JAX = XLA compiled (args+outputs+temp); torch = saved-activation "
            "peak + params + grads + AdamW; different measurements")
  if meta.get("machine_note"):
    note += f"\n{meta['machine_note']}"
  fig.suptitle(f"RMAAT training step, {meta['device_name']}, jax {meta['jax']}, torch "
               f"{meta['torch']}\n{note}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
