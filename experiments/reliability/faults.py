"""The trainer's command line in subprocesses, and the faults done to it: shared by the
command-line tests (tests/conftest.py, test_faults.py, test_cli.py, ...) and
experiments/reliability/fault_injection.py.

- `run_main` runs `python -m rmaat_jax.main` on configs/lra_listops.py from the repository
  root, with a persistent JAX compilation cache; `listops_flags` / `tiny_listops` give the
  tiny model on generated ListOps that the tests, the fault campaign and the GPU campaign's
  dry run train.
- Faults: `kill_during_checkpoint_write` (SIGKILL the moment orbax starts writing a step),
  `corrupt_checkpoint` (one of CORRUPTIONS done to a step directory), `wait_for_path`.
"""

import atexit
import functools
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from experiments.results_store import ROOT  # the repository root: the runs' cwd


def main_command(workdir, *overrides) -> list[str]:
  return [sys.executable, "-m", "rmaat_jax.main", "--config", "configs/lra_listops.py",
          f"--workdir={workdir}", *overrides]


@functools.cache
def session_cache() -> str:
  """One persistent JAX compilation cache per process (per xdist worker in the tests): the
  subprocess runs compile the same few tiny programs again and again; loading them saves
  ~15 s per run. Made on first use, removed at exit."""
  path = tempfile.mkdtemp(prefix="rmaat_jax_test_cache_")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def main_env(devices: int = 1, compile_cache=None) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  if compile_cache is not False:  # False: compile from scratch
    env.update(JAX_COMPILATION_CACHE_DIR=str(compile_cache or session_cache()),
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


def run_two_processes(workdir, flags: list[str], log_dir, timeout: float = 600
                      ) -> list[tuple[int, pathlib.Path]]:
  """Trains with 2 processes x 2 forced CPU devices joined on the loopback address
  (jax.distributed, CPU collectives); returns each process's (exit status, log file)."""
  with socket.socket() as s:  # a free port for the coordinator
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  distributed = [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                 "--config.distributed.enabled=True", "--config.distributed.num_processes=2"]
  processes = []
  for index in range(2):
    log_path = pathlib.Path(log_dir) / f"process{index}.log"
    log = open(log_path, "w")  # noqa: SIM115 -- closed below
    processes.append((subprocess.Popen(
        main_command(workdir, *flags, *distributed, f"--config.distributed.process_id={index}"),
        cwd=ROOT, env=main_env(2), stdout=subprocess.DEVNULL, stderr=log, text=True),
        log, log_path))
  for process, log, _ in processes:
    process.wait(timeout=timeout)
    log.close()
  return [(process.returncode, log_path) for process, _, log_path in processes]


def tiny_listops(**overrides) -> dict:
  """configs/lra_listops.py's overrides for a tiny model (d 16, 1 layer) on a tiny generated
  ListOps set (40 / 8 / 8 examples of 64 tokens), plus `overrides`."""
  return {"model.seq_len": 64, "model.num_segments": 2, "model.emb_dim": 16,
          "model.num_heads": 2, "model.num_layers": 1, "model.mlp_dim": 32,
          "train.batch_size": 4, "train.num_eval_batches": 2,
          "data.generate_sizes": "(40,8,8)", **overrides}


def config_flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def listops_flags(data_dir, **train_flags) -> list[str]:
  """The tiny ListOps run's flags (one warmup step), its data in `data_dir`."""
  return config_flags(tiny_listops(**{"train.warmup_steps": 1, "data.data_dir": str(data_dir),
                                      **train_flags}))


def listops_config(**train_flags) -> dict:
  """What `listops_flags(data_dir, **train_flags)` trains, for a results file: the config
  file and its overrides (the data dir, a temporary one, left out)."""
  return {"config": "configs/lra_listops.py",
          "overrides": tiny_listops(**{"train.warmup_steps": 1, **train_flags})}


def results_without_resume(workdir):
  results = json.loads((workdir / "results.json").read_text())
  return {k: v for k, v in results.items() if k != "resumed_from_step"}, results


_ABSL_LINE = re.compile(r"\s*[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's log lines


def error_lines(stderr: str, prefix: str = "error:") -> list[str]:
  """Our `error:` / `warning:` lines in a run's stderr, from the prefix on.

  orbax's background threads print tracebacks ("RuntimeError: Event loop is closed") while
  we write; a fragment of one can end up just before our line (seen: "    warning: ...",
  "RuntimeErrorwarning: ...", "Event loop is closedwarning: ..."). So the prefix may start
  anywhere in a line; absl's log lines ("W1204 12:00:00.0 ... file.py:53] ...") are not ours.
  """
  lines = []
  for line in stderr.splitlines():
    start = line.find(prefix)
    if start >= 0 and not _ABSL_LINE.match(line):
      lines.append(line[start:])
  return lines


# --- faults ------------------------------------------------------------------------------

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
    # Every data file of the state's OCDBT store (array bytes, zstd-compressed, and b-tree
    # nodes). Damaging only the largest was not always fatal: which file a restore reads
    # depends on how the store was written, and the largest one is sometimes not read.
    target = step_dir / "state"
    files = sorted(p for p in target.rglob("d/*") if p.is_file())
    if not files:
      raise FileNotFoundError(f"no array data files under {target}")
    for file in files:
      if how == "truncate_array_data":
        os.truncate(file, file.stat().st_size // 8)  # orbax reads byte ranges
      else:
        file.write_bytes(rng.randbytes(file.stat().st_size))
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
