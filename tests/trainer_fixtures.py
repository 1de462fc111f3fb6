"""The trainer's command line in subprocesses, shared by test_train.py and test_faults.py."""

import atexit
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main_command(workdir, *overrides) -> list[str]:
  return [sys.executable, "-m", "rmaat_jax.main", "--config", "configs/lra_listops.py",
          f"--workdir={workdir}", *overrides]


# One persistent JAX compilation cache per test process (xdist worker): the subprocess runs
# compile the same few tiny programs again and again; loading them saves ~15 s per run.
SESSION_CACHE = tempfile.mkdtemp(prefix="rmaat_jax_test_cache_")
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)


def main_env(devices: int = 1, compile_cache=None) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  if compile_cache is not False:  # False: compile from scratch
    env.update(JAX_COMPILATION_CACHE_DIR=str(compile_cache or SESSION_CACHE),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def run_main(workdir, *overrides, devices=1, wait=True, compile_cache=None, **popen):
  """Runs main.py; waits and returns (exit status, stderr), or returns the Popen. (Without
  `wait`, pass `stderr=<file>` if it runs long: a full pipe would block it.)"""
  popen.setdefault("stderr", subprocess.PIPE)
  process = subprocess.Popen(main_command(workdir, *overrides), cwd=ROOT,
                             env=main_env(devices, compile_cache), stdout=subprocess.DEVNULL,
                             text=True, **popen)
  if wait:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr
  return process


def listops_flags(data_dir, **train_flags):
  flags = {"model.seq_len": 64, "model.num_segments": 2, "model.emb_dim": 16,
           "model.num_heads": 2, "model.num_layers": 1, "model.mlp_dim": 32,
           "train.batch_size": 4, "train.num_eval_batches": 2, "train.warmup_steps": 1,
           "data.generate_sizes": "(40,8,8)", "data.data_dir": str(data_dir), **train_flags}
  return [f"--config.{k}={v}" for k, v in flags.items()]


def prepare_listops_data(data_dir) -> None:
  """Generates and prepares the tiny ListOps set in `data_dir` with a one-step run (which
  also fills this worker's compilation cache with the tiny model's programs)."""
  code, stderr = run_main(data_dir / "warmup", *listops_flags(data_dir, **{
      "train.num_steps": 1}))
  assert code == 0, stderr


def results_without_resume(workdir):
  results = json.loads((workdir / "results.json").read_text())
  return {k: v for k, v in results.items() if k != "resumed_from_step"}, results


# --- faults (also used by experiments/fault_injection.py) --------------------------------

# orbax writes a step into `<step>.orbax-checkpoint-tmp-<timestamp>` and renames it when done
# (orbax.checkpoint._src.path.atomicity_types.TMP_DIR_SUFFIX).
TMP_MARKER = ".orbax-checkpoint-tmp"
CORRUPTIONS = ("truncate_array_data", "garbage_array_data", "garbage_meta",
               "delete_array_index", "delete_data_state", "empty_step_dir")


def tmp_dirs(directory) -> list[str]:
  directory = pathlib.Path(directory)
  return sorted(p.name for p in directory.iterdir() if TMP_MARKER in p.name) \
      if directory.is_dir() else []


def kill_during_checkpoint_write(process, directory, min_step=1, timeout=300) -> int | None:
  """SIGKILLs `process` the moment orbax starts writing a step >= min_step into `directory`
  (polled every millisecond); returns that step, or None if the process ended first."""
  deadline = time.time() + timeout
  while process.poll() is None and time.time() < deadline:
    for name in tmp_dirs(directory):
      step = int(name.split(".")[0])
      if step >= min_step:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return step
    time.sleep(0.001)
  return None


def wait_for_path(process, path, timeout=300) -> bool:
  """True once `path` exists while `process` still runs."""
  path = pathlib.Path(path)
  deadline = time.time() + timeout
  while not path.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  return path.exists() and process.poll() is None


def corrupt_checkpoint(step_dir, how: str, seed: int = 0) -> str:
  """Damages one orbax step directory the way a bad disk, a full disk or a careless `rm`
  would; returns the damaged path."""
  step_dir = pathlib.Path(step_dir)
  rng = random.Random(seed)
  if how in ("truncate_array_data", "garbage_array_data"):
    # The largest chunk file of the state's OCDBT store: array bytes (zstd-compressed).
    target = max((p for p in (step_dir / "state").rglob("ocdbt.process_*/d/*")),
                 key=lambda p: (p.stat().st_size, p.name))
    if how == "truncate_array_data":
      os.truncate(target, target.stat().st_size // 8)  # orbax reads byte ranges
    else:
      target.write_bytes(rng.randbytes(target.stat().st_size))
  elif how == "garbage_meta":
    target = step_dir / "meta" / "metadata"
    target.write_bytes(rng.randbytes(target.stat().st_size))
  elif how == "delete_array_index":
    target = step_dir / "state" / "manifest.ocdbt"
    target.unlink()
  elif how == "delete_data_state":
    target = next((step_dir / "data").glob("process_*.json"))
    target.unlink()
  elif how == "empty_step_dir":
    target = step_dir
    shutil.rmtree(step_dir)
    step_dir.mkdir()
  else:
    raise ValueError(f"unknown corruption {how!r}; one of {CORRUPTIONS}")
  return str(target)


def error_lines(stderr: str, prefix: str = "error:") -> list[str]:
  # lstrip: orbax's background thread may print a traceback's indentation just before our
  # line (seen under load: "    warning: checkpoint ... cannot be restored").
  return [line.lstrip() for line in stderr.splitlines() if line.lstrip().startswith(prefix)]
