"""A new user's command line: quiet logs, configs from any directory, --help, a changed
config on resume, an offline download, a shortened run's warmup."""

import json
import re
import subprocess
import sys
import time

from experiments.reliability.faults import ROOT, error_lines, listops_flags, main_env, run_main

CONFIG = str(ROOT / "configs" / "lra_listops.py")
LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] (.*)$")
# Files whose log records a default (quiet) run shows: the project's.
PROJECT_FILES = {"main.py", "train.py", "pipeline.py", "checkpointing.py", "memory.py",
                 "metric_logging.py"}


def run_elsewhere(cwd, workdir, *overrides, timeout=600):
  """main.py from `cwd` (not the repository) with the config given by absolute path."""
  process = subprocess.run(
      [sys.executable, "-m", "rmaat_jax.main", "--config", CONFIG, f"--workdir={workdir}",
       *overrides], cwd=cwd, env=main_env(), capture_output=True, text=True, timeout=timeout)
  return process.returncode, process.stderr


def step_dirs(workdir):
  return {p.relative_to(workdir).as_posix(): p.stat().st_mtime_ns
          for sub in ("checkpoints", "best") for p in (workdir / sub).glob("*")}


def test_quiet_run_elsewhere_eval_only_and_resume_rules(listops_data, tmp_path):
  workdir = tmp_path / "w"
  flags = listops_flags(listops_data, **{"train.num_steps": 4, "train.eval_every": 2,
                                         "train.checkpoint_every": 2, "train.log_every": 2,
                                         "train.warmup_steps": 1000})
  code, stderr = run_elsewhere(tmp_path, workdir, *flags)
  assert code == 0, stderr
  # Quiet by default: every log line comes from the project (or clu's metric lines).
  lines = [line for line in stderr.splitlines() if line.strip()]
  sources = [LOG_LINE.match(line) for line in lines]
  assert all(sources), [line for line, m in zip(lines, sources, strict=True) if not m]
  assert {m.group(1) for m in sources} <= PROJECT_FILES, stderr
  text = "\n".join(m.group(2) for m in sources)
  for expected in ("Training listops", "Data: GENERATED listops", "Memory check",
                   "steps/s", "ETA", "val_accuracy", "Checkpoint of step 4", "Results:"):
    assert expected in text, (expected, stderr)
  # A shortened run scales the warmup down, with one warning line.
  [warning] = [m.group(2) for m in sources if "warmup" in m.group(2)]
  assert "train.warmup_steps=1000 is longer than train.num_steps=4" in warning, stderr
  assert json.loads((workdir / "config.json").read_text())["model.emb_dim"] == 16

  # --eval_only reports the best checkpoint's test accuracy, as the training run did.
  code, stderr = run_main(workdir, *flags, "--eval_only")
  assert code == 0, stderr
  trained = json.loads((workdir / "results.json").read_text())
  evaluated = json.loads((workdir / "eval_results.json").read_text())
  assert evaluated["best_step"] == trained["best_step"]
  assert evaluated["test_accuracy"] == trained["test_accuracy"]

  # A model field changed: one error line naming it, before any data, compile or restore.
  before = step_dirs(workdir)
  start = time.time()
  code, stderr = run_main(workdir, *flags, "--config.model.emb_dim=32",
                          "--config.model.dropout_rate=0.2")
  assert code == 2, stderr
  [line] = error_lines(stderr)
  assert "model.dropout_rate 0.1 -> 0.2, model.emb_dim 16 -> 32" in line, line
  assert "fresh --workdir" in line and str(workdir / "config.json") in line, line
  assert "Traceback" not in stderr and "Memory check" not in stderr
  assert time.time() - start < 60
  assert step_dirs(workdir) == before  # checkpoints untouched
  code, stderr = run_main(workdir, *flags, "--config.model.emb_dim=32", "--eval_only")
  assert code == 2 and "model.emb_dim 16 -> 32" in error_lines(stderr)[0], stderr

  # Resumable fields may change (more steps, another cadence); --verbosity=1 shows the
  # libraries' lines again.
  more = [*flags, "--config.train.num_steps=6", "--config.train.log_every=3", "--verbosity=1"]
  code, stderr = run_main(workdir, *more)
  assert code == 0, stderr
  assert json.loads((workdir / "results.json").read_text())["resumed_from_step"] == 4
  assert "checkpoint_manager.py" in stderr  # orbax's INFO lines


def test_help_lists_task_configs_and_presets(tmp_path):
  process = subprocess.run([sys.executable, "-m", "rmaat_jax.main", "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
  assert process.returncode in (0, 1), process.stderr  # absl's --help exits with 1
  text = " ".join(process.stdout.split())
  for name in ("lra_image.py", "lra_listops.py", "lra_pathfinder.py", "lra_retrieval.py",
               "lra_text.py", "rmt", "rlt", "cpu", "--verbosity=1"):
    assert name in text, (name, text)


def test_config_by_absolute_path_loads_from_any_directory(tmp_path):
  # The task config file imports only rmaat_jax (configs/ is not a package): loaded by path
  # from elsewhere, it parses; a mistyped override then stops with one line, before any work.
  process = subprocess.run(
      [sys.executable, "-m", "rmaat_jax.main", "--config", f"{CONFIG}:cpu",
       "--config.train.num_stepz=5", f"--workdir={tmp_path / 'w'}"], cwd=tmp_path,
      capture_output=True, text=True, timeout=60)
  assert process.returncode == 2, process.stderr
  assert error_lines(process.stderr) == [
      "error: --config.train.num_stepz: 'num_stepz' is not a config field; did you mean "
      "'num_steps'? rmaat_jax/configs/default.py lists every field"], process.stderr
  assert "Traceback" not in process.stderr and not (tmp_path / "w").exists()


def offline_env():
  """Every HTTP(S) request goes to a closed local port: offline, without waiting."""
  env = main_env()
  env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
             http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
             NO_PROXY="", no_proxy="")
  return env


def test_headline_command_offline_stops_at_once_naming_the_substitute(tmp_path):
  data_dir = tmp_path / "tfds"
  for extra in ([], ["--config.data.download=False"]):
    start = time.time()
    process = subprocess.run(
        [sys.executable, "-m", "rmaat_jax.main", "--config", "configs/lra_image.py",
         f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={data_dir}", *extra],
        cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=120)
    assert process.returncode == 2, process.stderr
    assert time.time() - start < 30
    [line] = error_lines(process.stderr)
    assert "cifar10" in line and "--config.data.dataset=fashion_mnist" in line, line
    assert ("unreachable" in line) if not extra else ("download=True" in line), line
    assert "Traceback" not in process.stderr
    assert not data_dir.exists() or not any(data_dir.iterdir()), list(data_dir.rglob("*"))


def test_a_run_resumed_with_other_data_workers_ends_as_an_uninterrupted_one(listops_data,
                                                                            tmp_path):
  import shutil

  from experiments.reliability.faults import results_without_resume

  # Validation at the end only: the state after the step-2 checkpoint is then exactly
  # checkpoints/2 (no best checkpoint yet).
  flags = listops_flags(listops_data, **{"train.num_steps": 4, "train.eval_every": 4,
                                         "train.checkpoint_every": 2, "train.log_every": 2})
  code, stderr = run_main(tmp_path / "straight", *flags)
  assert code == 0, stderr
  # The same run, as if killed after its step-2 checkpoint (a copy of its workdir without
  # what came later): resumed with 2 grain workers.
  workdir = tmp_path / "resumed"
  shutil.copytree(tmp_path / "straight", workdir)
  for leftover in (workdir / "checkpoints" / "4", workdir / "best", workdir / "results.json"):
    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
  code, stderr = run_main(workdir, *flags, "--config.data.num_workers=2")
  assert code == 0, stderr
  resumed, raw = results_without_resume(workdir)
  assert raw["resumed_from_step"] == 2
  assert resumed == results_without_resume(tmp_path / "straight")[0]
  # Worker processes add nothing to the log: no library lines, no exit-time tracebacks.
  lines = [line for line in stderr.splitlines() if line.strip()]
  sources = [LOG_LINE.match(line) for line in lines]
  assert all(sources), [line for line, m in zip(lines, sources, strict=True) if not m]
  assert {m.group(1) for m in sources} <= PROJECT_FILES, stderr
