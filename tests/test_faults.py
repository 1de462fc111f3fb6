"""Faults end to end, in subprocesses: SIGKILL (also mid-checkpoint-write), corrupt
checkpoints, SIGTERM preemption and a diverging run. Every run that is restarted must end with
the results.json of an uninterrupted run (bar `resumed_from_step`)."""

import functools
import os
import random
import re
import shutil
import signal
import time

import orbax.checkpoint as ocp
import pytest

from experiments.reliability.faults import (
  corrupt_checkpoint,
  error_lines,
  kill_during_checkpoint_write,
  listops_flags,
  results_without_resume,
  run_main,
  tmp_dirs,
  wait_for_path,
)
from rmaat_jax.checkpointing import PREEMPTED_EXIT_STATUS, tree_is_finite

# Checkpoints at 5, 10, ..., 30 (the last 3 kept) fall inside logging windows of 4 steps, so
# a resume also has to continue an open window.
FAULT_TRAIN = {"train.num_steps": 30, "train.checkpoint_every": 5, "train.eval_every": 5,
               "train.log_every": 4}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """run_main, with a compilation cache shared by this module's runs (the same programs,
  loaded instead of compiled: restarts take ~15 s less)."""
  return functools.partial(run_main, compile_cache=tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")  # prepared by the reference run


@pytest.fixture(scope="module")
def flags(data_dir):
  return listops_flags(data_dir, **FAULT_TRAIN)


@pytest.fixture(scope="module")
def reference(run, flags, tmp_path_factory):
  """An uninterrupted run: (its workdir, its results without `resumed_from_step`)."""
  workdir = tmp_path_factory.mktemp("reference") / "work"
  code, stderr = run(workdir, *flags)
  assert code == 0, stderr
  return workdir, results_without_resume(workdir)[0]


def start(run, workdir, flags, log):
  """A run in the background; its stderr goes to `log` (a pipe nobody reads would fill)."""
  with open(log, "w") as f:
    return run(workdir, *flags, wait=False, stderr=f)


def finish(run, workdir, flags, reference_results) -> tuple[dict, str]:
  """Runs the same command again; it must end with the uninterrupted run's results."""
  code, stderr = run(workdir, *flags)
  assert code == 0, stderr
  resumed, raw = results_without_resume(workdir)
  assert resumed == reference_results
  return raw, stderr


def copy_finished_run(reference, tmp_path):
  """The reference workdir as it was just before its final results were written."""
  workdir = tmp_path / "work"
  shutil.copytree(reference[0], workdir)
  (workdir / "results.json").unlink()
  return workdir


def step_dirs(directory) -> list[int]:
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


@pytest.mark.parametrize("directory", [
    "checkpoints", pytest.param("best", marks=pytest.mark.slow)])
def test_kill_during_checkpoint_write(run, flags, reference, tmp_path, directory):
  workdir = tmp_path / "work"
  process = start(run, workdir, flags, tmp_path / "killed.log")
  # best/ is written when validation accuracy improves: surely at the first one (step 5)
  min_step = 10 if directory == "checkpoints" else 1
  step = kill_during_checkpoint_write(process, workdir / directory, min_step=min_step)
  assert step is not None, "the run ended before a checkpoint write could be interrupted"
  assert tmp_dirs(workdir / directory), "the write had finished before the kill"
  assert step not in step_dirs(workdir / directory)
  complete = step_dirs(workdir / "checkpoints")

  raw, _ = finish(run, workdir, flags, reference[1])
  assert raw["resumed_from_step"] == (complete[-1] if complete else None)
  assert not tmp_dirs(workdir / "checkpoints") and not tmp_dirs(workdir / "best")


def test_corrupt_latest_checkpoints_fall_back_to_a_good_one(run, reference, flags, tmp_path):
  workdir = copy_finished_run(reference, tmp_path)
  checkpoints = workdir / "checkpoints"
  assert step_dirs(checkpoints) == [20, 25, 30]
  corrupt_checkpoint(checkpoints / "30", "truncate_array_data")
  corrupt_checkpoint(checkpoints / "25", "garbage_meta")

  raw, stderr = finish(run, workdir, flags, reference[1])
  assert raw["resumed_from_step"] == 20
  warnings = error_lines(stderr, "warning:")
  for step in (30, 25):
    assert any(f"checkpoint {checkpoints / str(step)} cannot be restored" in line
               for line in warnings), stderr
    assert (checkpoints / f"corrupt-{step}" / "state").is_dir()  # moved aside, not deleted
  assert any("moved the unreadable checkpoint" in line for line in warnings)
  assert step_dirs(checkpoints) == [20, 25, 30]  # written again
  # orbax's failed reads leave nothing in the default log: no "Event loop is closed"
  # tracebacks from its C++ threads, no asyncio "exception was never retrieved".
  assert "Traceback" not in stderr and "was never retrieved" not in stderr, stderr


def test_no_restorable_checkpoint_is_an_error(run, reference, flags, tmp_path):
  workdir = copy_finished_run(reference, tmp_path)
  checkpoints = workdir / "checkpoints"
  for step, how in zip([20, 25, 30], ["delete_array_index", "delete_data_state",
                                      "empty_step_dir"], strict=True):
    corrupt_checkpoint(checkpoints / str(step), how)
  before = sorted(os.listdir(checkpoints))

  code, stderr = run(workdir, *flags)
  assert code == 2, stderr
  lines = error_lines(stderr)
  assert len(lines) == 1 and f"no checkpoint in {checkpoints} can be restored" in lines[0]
  assert "fresh --workdir" in lines[0] and "CheckpointError" not in stderr
  assert "Traceback" not in stderr and "was never retrieved" not in stderr, stderr
  assert sorted(os.listdir(checkpoints)) == before  # nothing moved, nothing started over
  assert not (workdir / "results.json").exists()


def test_sigterm_saves_the_current_step_and_resumes(run, reference, flags, tmp_path):
  workdir = tmp_path / "work"
  process = start(run, workdir, flags, tmp_path / "preempted.log")
  assert wait_for_path(process, workdir / "checkpoints" / "10"), "the run ended too soon"
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=300) == PREEMPTED_EXIT_STATUS
  stderr = (tmp_path / "preempted.log").read_text()
  match = re.search(r"preempted at step (\d+); checkpoint saved in (\S+); rerun the same "
                    r"command to resume", stderr)
  assert match, stderr
  step = int(match.group(1))
  assert 10 < step < 30 and step_dirs(workdir / "checkpoints")[-1] == step

  raw, _ = finish(run, workdir, flags, reference[1])
  assert raw["resumed_from_step"] == step


def test_diverging_run_stops_and_keeps_only_finite_checkpoints(run, data_dir, reference,
                                                                tmp_path):
  """A learning rate of 1e6 without clipping genuinely diverges within a few steps."""
  del reference  # (prepares the data)
  workdir = tmp_path / "work"
  code, stderr = run(workdir, *listops_flags(data_dir, **{
      "train.num_steps": 12, "train.checkpoint_every": 1, "train.eval_every": 1,
      "train.log_every": 1, "train.warmup_steps": 3, "train.learning_rate": 1e6,
      "train.grad_clip": 0}))
  assert code == 2, stderr
  lines = error_lines(stderr)
  assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr
  assert "Traceback" not in stderr
  match = re.fullmatch(r"error: (training loss|validation loss|the parameters) .*at step (\d+); "
                       r"the last good checkpoint is step (\d+) in (\S+); lower "
                       r"train\.learning_rate or set train\.grad_clip \(e\.g\. 1\.0\)", lines[0])
  assert match, lines[0]
  bad, last_good = int(match.group(2)), int(match.group(3))
  assert match.group(4) == str(workdir / "checkpoints") and last_good < bad < 12
  assert step_dirs(workdir / "checkpoints")[-1] == last_good
  assert step_dirs(workdir / "best") and step_dirs(workdir / "best")[-1] <= last_good
  for directory in ("checkpoints", "best"):
    for step in step_dirs(workdir / directory):
      state = ocp.StandardCheckpointer().restore(workdir / directory / str(step) / "state")
      assert tree_is_finite(state["params"]), (directory, step)
  assert not (workdir / "results.json").exists()


@pytest.mark.slow
def test_corrupt_best_checkpoint_is_reported_and_replaced(run, reference, flags, tmp_path):
  workdir = copy_finished_run(reference, tmp_path)
  for step in (25, 30):  # resume from 20: validations at 25 and 30 remain
    shutil.rmtree(workdir / "checkpoints" / str(step))
  (best_step,) = step_dirs(workdir / "best")
  corrupt_checkpoint(workdir / "best" / str(best_step), "truncate_array_data")

  code, stderr = run(workdir, *flags)
  assert code == 0, stderr
  assert any(f"best checkpoint {workdir / 'best' / str(best_step)} cannot be restored" in line
             for line in error_lines(stderr, "warning:")), stderr
  assert (workdir / "best" / f"corrupt-{best_step}").is_dir()
  resumed, raw = results_without_resume(workdir)
  assert raw["resumed_from_step"] == 20 and raw["best_step"] in (25, 30)


@pytest.mark.slow
def test_random_sigkills_resume_to_identical_results(run, reference, flags, tmp_path):
  """Three SIGKILLs at random moments (start-up, training, checkpointing, evaluation)."""
  seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 10_000))
  print(f"FAULT_SEED={seed}")  # shown on failure; set it to replay the same kill times
  rng = random.Random(seed)
  workdir = tmp_path / "work"
  for kill in range(3):
    process = start(run, workdir, flags, tmp_path / f"killed{kill}.log")
    time.sleep(rng.uniform(5, 40))
    if process.poll() is not None:
      break  # finished before the kill: the final check below still applies
    process.send_signal(signal.SIGKILL)
    process.wait()
  finish(run, workdir, flags, reference[1])
