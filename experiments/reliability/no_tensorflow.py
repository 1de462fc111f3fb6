"""Training with TensorFlow absent: a virtual environment without it (issue 4).

    python -m experiments.reliability.no_tensorflow [--steps 6]

Makes a throw-away virtual environment (`python -m venv --without-pip`) whose site-packages
holds links to every package of the running environment except TensorFlow itself (the
`tensorflow` package and its dist-info; tensorflow_datasets, grain, jax, flax, clu and the
tensorboard package stay), checks that `import tensorflow` fails there, then runs the trainer
in it: the tiny ListOps model (faults.py's `listops_flags`) on a fresh data dir,
`--steps` steps with a checkpoint and a validation halfway and at the end, a log every 2
steps, so it generates, prepares (TFDS ArrayRecord), reads (grain), trains, checkpoints
(orbax) and writes TensorBoard events (rmaat_jax.metric_logging). Then it reads the events
back, also in that environment. Prints and writes experiments/results/no_tensorflow.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tempfile
import time

from experiments.reliability.faults import (
  ROOT,
  listops_config,
  listops_flags,
  main_command,
  main_env,
)
from experiments.results_store import RESULTS_DIR, provenance, provenance_line

LEFT_OUT = ("tensorflow",)  # the package; its dist-info is tensorflow[_cpu|_gpu]-*.dist-info

PROBE = """
import importlib.metadata as md, importlib.util, json, sys
out = {"python": sys.executable,
       "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None}
for name in ("jax", "flax", "tensorflow-datasets", "grain", "clu", "orbax-checkpoint",
             "tensorboard"):
  out[name] = md.version(name)
try:
  import tensorflow  # noqa: F401
  out["import_tensorflow"] = "succeeded"
except ImportError as e:
  out["import_tensorflow"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""

READ_EVENTS = """
import json, sys
from tensorboard.backend.event_processing import event_accumulator
acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)]
                  for t in acc.Tags()["scalars"]}))
"""


def left_out(name: str) -> bool:
  return name in LEFT_OUT or (name.startswith("tensorflow") and name.endswith(".dist-info")
                              and not name.startswith(("tensorflow_datasets",
                                                       "tensorflow_metadata")))


def make_venv(root: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
  """A venv at root linking the running environment's packages but TensorFlow's."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
  python = root / "bin" / "python"
  source = pathlib.Path(sysconfig.get_paths()["purelib"])
  target = pathlib.Path(subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True).stdout.strip())
  skipped = []
  for entry in sorted(source.iterdir()):
    if left_out(entry.name):
      skipped.append(entry.name)
    elif not (target / entry.name).exists():
      (target / entry.name).symlink_to(entry)
  return python, skipped


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args(argv)
  half = max(args.steps // 2, 1)

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    python, skipped = make_venv(tmp / "venv")
    probe = json.loads(subprocess.run([python, "-c", PROBE], check=True, capture_output=True,
                                      text=True, cwd=ROOT).stdout)
    if probe["tensorflow_importable"]:
      sys.exit(f"TensorFlow is still importable in {python}: {probe}")
    train_flags = {"train.num_steps": args.steps, "train.checkpoint_every": half,
                   "train.eval_every": half, "train.log_every": 2}
    flags = listops_flags(tmp / "tfds", **train_flags)
    command = [str(python), *main_command(tmp / "run", *flags)[1:]]
    start = time.time()
    run = subprocess.run(command, cwd=ROOT, env=main_env(1, compile_cache=False),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.time() - start
    workdir = tmp / "run"
    report = {"exit_status": run.returncode, "seconds": round(seconds, 1)}
    if run.returncode == 0:
      results = json.loads((workdir / "results.json").read_text())
      events = json.loads(subprocess.run([python, "-c", READ_EVENTS, str(workdir)],
                                         check=True, capture_output=True, text=True,
                                         cwd=ROOT).stdout)
      prepared = sorted(str(p.relative_to(tmp / "tfds")) for p in (tmp / "tfds").glob("*/*/*")
                        if p.is_dir() and p.parts[-3] != "generated")
      report.update(
          generated=sorted(p.name for p in (tmp / "tfds").rglob("basic_*.tsv")),
          prepared=prepared,
          array_record_files=len(list((tmp / "tfds").rglob("*.array_record*"))),
          checkpoints=sorted(p.name for p in (workdir / "checkpoints").iterdir()
                             if p.name.isdigit()),
          best=sorted(p.name for p in (workdir / "best").iterdir() if p.name.isdigit())
          if (workdir / "best").is_dir() else [],
          event_files=len(list(workdir.glob("events.out.tfevents.*"))),
          event_train_loss=events.get("train_loss"),
          event_tags=sorted(events),
          results={k: results[k] for k in ("steps", "train_loss", "test_loss",
                                            "test_accuracy", "best_step", "data_source")
                   if k in results})
    else:
      report["stderr_tail"] = run.stderr[-3000:]

  meta = {**provenance(args.machine, module=__spec__.name, argv=argv),
          "left_out_of_the_venv": skipped, "venv": probe, **listops_config(**train_flags)}
  print(json.dumps({"meta": meta, "run": report}, indent=1))
  lines = [f"- left out of the environment: {', '.join(skipped)}",
           f"- `import tensorflow` there: {probe['import_tensorflow']}",
           "- versions: " + ", ".join(f"{k} {probe[k]}" for k in (
               "jax", "flax", "tensorflow-datasets", "grain", "clu", "orbax-checkpoint",
               "tensorboard")),
           f"- trainer exit status {report['exit_status']}, {report['seconds']} s"]
  if report["exit_status"] == 0:
    lines += [f"- generated: {', '.join(report['generated'])}; prepared: "
              f"{', '.join(report['prepared'])} ({report['array_record_files']} ArrayRecord "
              "files)",
              f"- checkpoints: {report['checkpoints']}, best: {report['best']}",
              f"- event files: {report['event_files']}; tags read back: "
              f"{', '.join(report['event_tags'])}",
              f"- train_loss events (step, value): {report['event_train_loss']}",
              f"- results.json: {report['results']}"]
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "no_tensorflow.json").write_text(
      json.dumps({"meta": meta, "run": report}, indent=1) + "\n")
  (args.out_dir / "no_tensorflow.md").write_text(
      f"# no_tensorflow ({meta['date']}, {meta['machine']})\n\n"
      + "\n".join(lines) + f"\n\n{provenance_line(meta)}\n")
  if report["exit_status"]:
    sys.exit(f"the trainer failed without TensorFlow:\n{report['stderr_tail']}")


if __name__ == "__main__":
  main()
