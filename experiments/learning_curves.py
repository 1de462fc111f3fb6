"""Learning curves of RMAAT and the paper's baselines (RMT, RLT) at the `:cpu` size.

    python -m experiments.learning_curves [--workdir DIR] [--data_dir DIR] [--tasks ...]

Trains the `rmaat`, `rmt` and `rlt` presets at the `cpu` size on the tasks whose data can be
had offline: Image* (Fashion-MNIST, the substitute for CIFAR-10; Debian's
dataset-fashion-mnist), ListOps (generated) and Pathfinder-32 (generated). The three models
of a task share the steps, batch, seed and data. Three more runs follow:
- ListOps, RMAAT with `model.skip_empty_segments` flipped (both settings are reported);
- the retention ablation: RMAAT with `model.retention=none` on the task where the three
  models' test accuracies spread most (`--ablation_task` to choose it yourself);
- on the same task, RMAAT with pre-LN blocks (`model.block_layout=pre_ln`).

Every run is the trainer's own `train_and_evaluate` (checkpoints, best-validation test
accuracy); its curves are read back from the TensorBoard events it wrote. Rerunning the
command skips runs that finished (their workdir holds results.json) and resumes a run that
was interrupted. Writes experiments/results/learning_curves.{json,md,png}, merging rows by
(task, model, variant): a rerun of some runs replaces those rows only, and an invocation
stopped part-way keeps every other row (experiments/results_store.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np

from experiments.results_store import key_of, merge_rows, provenance
from rmaat_jax import configs, train
from rmaat_jax.data import get_datasets
from rmaat_jax.data.tasks import model_config

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
RUN_KEY = key_of(("task", "model", "variant"))
MODELS = ("rmaat", "rmt", "rlt")
# task -> (config module, overrides that select the offline data)
TASKS = {
    "image": ("lra_image", {"data.dataset": "fashion_mnist"}),
    "listops": ("lra_listops", {}),
    "pathfinder": ("lra_pathfinder", {}),
}
TASK_LABELS = {"image": "Image* (Fashion-MNIST substitute)", "listops": "ListOps (generated)",
               "pathfinder": "Pathfinder-32 hard (generated)"}


def run_config(task: str, model: str, overrides: dict[str, Any], data_dir: str,
               eval_every: int, num_steps: int = 0):
  name, data_overrides = TASKS[task]
  config = configs.load(name, f"{model},cpu")
  if num_steps:  # a smoke run
    overrides = {**overrides, "train.num_steps": num_steps,
                 "train.warmup_steps": min(config.train.warmup_steps, num_steps)}
  for key, value in {**data_overrides, **overrides, "data.data_dir": data_dir,
                     "train.eval_every": eval_every}.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def read_scalars(workdir: pathlib.Path) -> dict[str, list[tuple[int, float, float]]]:
  """{tag: [(step, wall_time, value)]} from the TensorBoard events of a run (clu's tensor
  summaries or the fallback writer's simple values)."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  acc = event_accumulator.EventAccumulator(
      str(workdir), size_guidance={event_accumulator.TENSORS: 0,
                                   event_accumulator.SCALARS: 0})
  acc.Reload()
  scalars = collections.defaultdict(list)
  for tag in acc.Tags()["scalars"]:
    scalars[tag] += [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
  for tag in acc.Tags()["tensors"]:
    for e in acc.Tensors(tag):
      value = tensor_util.make_ndarray(e.tensor_proto)
      if value.size == 1 and np.issubdtype(value.dtype, np.number):
        scalars[tag].append((e.step, e.wall_time, float(value)))
  # A resumed run logs some steps twice: keep the last record of each step.
  return {tag: sorted({step: (step, wall, v) for step, wall, v in rows}.values())
          for tag, rows in scalars.items()}


def majority_rate(config) -> float:
  """Share of the most frequent label in the test split (the dashed line of the plot)."""
  labels = np.concatenate([b["targets"] for b in get_datasets(config).test])
  return float(np.bincount(labels).max() / labels.size)


def run(task: str, model: str, variant: str, overrides: dict[str, Any], args) -> dict:
  config = run_config(task, model, overrides, args.data_dir, args.eval_every, args.num_steps)
  # Named by what was trained, not by the label: a run is reused whatever the default is.
  skip = "skip" if config.model.skip_empty_segments else "noskip"
  workdir = (pathlib.Path(args.workdir) / f"{task}-{config.model.attention}-"
             f"{config.model.retention}-{skip}-{config.model.block_layout}")
  done = workdir / "results.json"
  start = time.time()
  if done.exists():
    results = json.loads(done.read_text())
    print(f"{task} {model} {variant}: finished before, reusing {workdir}", flush=True)
  else:
    print(f"{task} {model} {variant}: training in {workdir}", flush=True)
    results = train.train_and_evaluate(config, str(workdir))
  scalars = read_scalars(workdir)
  first_wall = min(w for rows in scalars.values() for _, w, _ in rows)
  curve = collections.defaultdict(dict)
  for tag in ("val_accuracy", "val_loss", "train_loss", "train_accuracy"):
    for step, wall, value in scalars.get(tag, []):
      curve[step].update({tag: value, "wall_s": wall - first_wall})
  row = {
      "task": task, "model": model, "variant": variant, "overrides": overrides,
      "steps": results["steps"], "batch_size": config.train.batch_size,
      "test_accuracy": results["test_accuracy"], "best_step": results["best_step"],
      "val_accuracy": results["val_accuracy"], "train_loss": results["train_loss"],
      "wall_s": max(w for rows in scalars.values() for _, w, _ in rows) - first_wall,
      "data_source": results["data_source"],
      "model_config": {k: model_config(config)[k] for k in (
          "attention", "backprop", "retention", "skip_empty_segments", "block_layout", "emb_dim",
          "num_heads", "num_layers", "mlp_dim", "seq_len", "num_segments")},
      "curve": [{"step": s, **v} for s, v in sorted(curve.items())],
  }
  print(f"  test accuracy {row['test_accuracy']:.4f} (best val {row['val_accuracy']:.4f} at "
        f"step {row['best_step']}), {row['wall_s'] / 60:.1f} min "
        f"({time.time() - start:.0f} s in this call)", flush=True)
  return row


def spread(rows: list[dict], task: str) -> float:
  accs = [r["test_accuracy"] for r in rows if r["task"] == task and r["variant"] == "main"]
  return max(accs) - min(accs)


def save_run(row: dict, majority: dict[str, float], meta: dict,
             out_dir: pathlib.Path = RESULTS) -> dict:
  """Merges one run (and the tasks' majority rates) into learning_curves.json, then redoes
  the table and the plot from everything the file holds; returns the file's payload."""
  path = out_dir / "learning_curves.json"
  stored = json.loads(path.read_text()).get("majority", {}) if path.exists() else {}
  runs = merge_rows(path, [row], RUN_KEY, meta=meta, section="runs",
                    extra={"majority": {**stored, **majority}})
  payload = {"meta": meta, "majority": {**stored, **majority}, "runs": runs}
  (out_dir / "learning_curves.md").write_text(table(payload) + "\n")
  plot(payload, out_dir / "learning_curves.png")
  return payload


def table(payload: dict) -> str:
  lines = [f"# learning_curves (latest invocation {payload['meta']['date']}, "
           f"{payload['meta']['machine']}; each run's own date and commit: the JSON)", "",
           "| task | model | variant | test acc | best val acc (step) | majority | "
           "final train loss | steps x batch | wall (min) | commit |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in payload["runs"]:
    lines.append(
        f"| {r['task']} | {r['model']} | {r['variant']} | {r['test_accuracy']:.3f} | "
        f"{r['val_accuracy']:.3f} ({r['best_step']}) | {payload['majority'][r['task']]:.3f} | "
        f"{r['train_loss']:.3f} | {r['steps']} x {r['batch_size']} | {r['wall_s'] / 60:.1f} | "
        f"{r.get('commit', '?')} |")
  return "\n".join(lines)


def plot(payload: dict, path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tasks = list(dict.fromkeys(r["task"] for r in payload["runs"]))
  fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7), squeeze=False)
  colors = {"rmaat": "tab:blue", "rmt": "tab:red", "rlt": "tab:green"}
  for col, task in enumerate(tasks):
    top, bottom = axes[0, col], axes[1, col]
    for r in (r for r in payload["runs"] if r["task"] == task):
      style = "-" if r["variant"] == "main" else ":"
      label = r["model"].upper() + ("" if r["variant"] == "main" else f" ({r['variant']})")
      points = [p for p in r["curve"] if "val_accuracy" in p]
      top.plot([p["step"] for p in points], [p["val_accuracy"] for p in points], style,
               marker="o", ms=3, color=colors[r["model"]], label=label)
      top.plot([r["steps"]], [r["test_accuracy"]], "*", ms=10, color=colors[r["model"]])
      losses = [p for p in r["curve"] if "train_loss" in p]
      bottom.plot([p["step"] for p in losses], [p["train_loss"] for p in losses], style,
                  color=colors[r["model"]], label=label)
    top.axhline(payload["majority"][task], ls="--", color="gray", label="majority class")
    top.set_title(TASK_LABELS[task])
    top.set_ylim(0, 1)  # the same scale in every panel: a flat line at chance looks flat
    top.set_ylabel("validation accuracy (star: test, best checkpoint)")
    bottom.set_ylabel("train loss")
    bottom.set_xlabel("step")
    top.legend(fontsize=8)
  fig.suptitle(f"RMAAT vs RMT vs RLT at the :cpu size ({payload['meta']['machine']}, "
               f"{payload['meta']['date']})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/rmaat_learning_curves")
  parser.add_argument("--data_dir", default="", help="TFDS data dir (default: TFDS's)")
  parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
  parser.add_argument("--eval_every", type=int, default=50)
  parser.add_argument("--num_steps", type=int, default=0, help="0: the :cpu preset's")
  parser.add_argument("--ablation_task", default="auto", choices=["auto", "none", *TASKS])
  parser.add_argument("--machine", default=None)
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)
  logging.getLogger().setLevel(logging.WARNING)

  runs, majority = [], {}
  meta = {**provenance(args.machine), "jax": jax.__version__,
          "note": "curves: validation accuracy every eval_every steps; test accuracy of the "
                  "best-validation checkpoint at the end (the trainer's results.json)"}

  def save():
    save_run({**runs[-1], **{k: meta[k] for k in ("date", "machine", "commit", "command")}},
             majority, meta, args.out_dir)

  for task in args.tasks:
    majority[task] = majority_rate(run_config(task, "rmaat", {}, args.data_dir, 50))
    for model in args.models:
      runs.append(run(task, model, "main", {}, args))
      save()
  default_skip = configs.load("lra_listops").model.skip_empty_segments
  if "listops" in args.tasks and "rmaat" in args.models:
    variant = "skip_empty" if not default_skip else "no_skip"
    runs.append(run("listops", "rmaat", variant,
                    {"model.skip_empty_segments": not default_skip}, args))
    save()
  ablation = args.ablation_task
  if ablation == "auto":
    ablation = max(args.tasks, key=lambda task: spread(runs, task))
  if ablation != "none":
    runs.append(run(ablation, "rmaat", "no_retention", {"model.retention": "none"}, args))
    save()
    # The block layout the paper leaves open (docs/method.md section 2): pre-LN instead.
    runs.append(run(ablation, "rmaat", "pre_ln", {"model.block_layout": "pre_ln"}, args))
    save()
  print((args.out_dir / "learning_curves.md").read_text())


if __name__ == "__main__":
  main()
