"""Checkpoints that survive faults: orbax managers for `workdir/checkpoints` and `workdir/best`.

- Writes: orbax writes a step into `<step>.orbax-checkpoint-tmp-<time>` and renames it when
  complete, so a process killed mid-write leaves no half checkpoint under a step name; such
  leftovers are removed when the managers start (`cleanup_tmp_directories`).
- Restores: newest step first. A step that does not restore (a truncated, garbage or missing
  file, or non-finite parameters) is reported (log and a `warning:` line on stderr); once an
  older step restores, each bad one is renamed to `corrupt-<step>` in the same directory
  (orbax ignores the name; nothing is deleted). If no step restores - corruption, or a config
  that no longer matches - nothing is moved and `CheckpointError` says what to do: the caller
  never starts over silently on top of a workdir it cannot read.
- Preemption: SIGTERM sets a flag that the train loop reads after each step; it then saves
  that step and raises `Preempted` (exit status 143).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import grain.python as grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from rmaat_jax import console
from rmaat_jax.errors import UserError

PREEMPTED_EXIT_STATUS = 143  # 128 + SIGTERM: what a shell reports for a job ended by SIGTERM
QUARANTINE_PREFIX = "corrupt-"


class CheckpointError(UserError):
  """A workdir's checkpoints cannot be used; the message names the directory (exit 2)."""


class Preempted(SystemExit):
  """Raised once the preemption checkpoint is on disk. A SystemExit, so the program ends with
  PREEMPTED_EXIT_STATUS without a traceback and without a handler in main.py."""

  def __init__(self, step: int):
    super().__init__(PREEMPTED_EXIT_STATUS)
    self.step = step


def report(message: str) -> None:
  """A problem the user should see even when logs go to a file: log it, and one stderr line."""
  logging.warning(message)
  console.user_line("warning", message)


@jax.jit
def _all_finite(tree) -> jax.Array:
  flags = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def tree_is_finite(tree: Any) -> bool:
  """No NaN or Inf in any floating leaf (one compiled reduction, on the device)."""
  return bool(_all_finite(tree))


def _describe(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  text = text[0] if text else ""
  return f"{type(error).__name__}: {text[:200]}"


class Checkpoints:
  """`latest` (every `checkpoint_every` steps and at `num_steps`, the newest `keep`) and `best`
  (one step: the best validation accuracy) orbax CheckpointManagers of a workdir."""

  def __init__(self, workdir: str, keep: int = 1, checkpoint_every: int = 1,
               num_steps: int = 1, read_only: bool = False):
    # read_only (eval-only): also leaves alone the tmp dirs of a run writing meanwhile.
    workdir = os.path.abspath(workdir)
    # Without these explicit policies orbax would also save the first step it sees.
    save_policy = policies.AnySavePolicy([
        policies.FixedIntervalPolicy(checkpoint_every),
        policies.SpecificStepsPolicy((num_steps,)),
        policies.PreemptionCheckpointingPolicy()])  # multi-host: JAX's preemption service
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only, save_decision_policy=save_policy),
        item_names=("state", "data", "meta"))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only),
        item_names=("state", "meta"))

  def should_save(self, step: int) -> bool:
    return self.latest.should_save(step)

  def save_latest(self, step: int, state, train_iter, meta: dict[str, Any],
                  force: bool = False) -> None:
    """Saves asynchronously; `state` is unreplicated. `force`: off the save schedule."""
    self.latest.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(train_iter),
        meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, state, train_iter) -> tuple[int | None, Any, dict[str, Any] | None]:
    """(step, state, meta) of the newest checkpoint that restores, `train_iter` moved to its
    position; (None, state, None) when there is none. Raises CheckpointError if none of
    several restores."""
    failures = []  # (step, description)
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state),
            data=grain.PyGrainCheckpointRestore(train_iter), meta=ocp.args.JsonRestore()))
        _check_restored(restored.state, step)
      except Exception as e:  # any failure to read makes the step unusable
        logging.debug("Restoring %s failed.", self._path(self.latest, step), exc_info=True)
        failures.append((step, _describe(e)))
        report(f"checkpoint {self._path(self.latest, step)} cannot be restored "
               f"({failures[-1][1]})")
      else:
        if failures:  # an older step restores with the same config: the newer ones are bad
          self._quarantine(self.latest, [s for s, _ in failures])
          report(f"resuming from the previous good checkpoint, step {step}")
        return step, restored.state, restored.meta
    if failures:
      details = "; ".join(f"step {s}: {d}" for s, d in failures)
      raise CheckpointError(
          f"no checkpoint in {self.latest.directory} can be restored ({details}). If the "
          "config changed since they were written, rerun with the original config; otherwise "
          "move that directory away or use a fresh --workdir")
    return None, state, None

  def save_best(self, step: int, state, meta: dict[str, Any]) -> None:
    if self.best.latest_step() == step:  # a resumed run may reach a saved step again
      return
    self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))
    self.best.wait_until_finished()

  def restore_best(self, template) -> tuple[int, Any, dict[str, Any]]:
    """(step, state, meta) of the best checkpoint; CheckpointError if missing or unreadable."""
    step = self.best.latest_step()
    if step is None:
      raise CheckpointError(f"no best checkpoint in {self.best.directory}: the run has not "
                            "validated yet (or its best checkpoint was moved aside as corrupt)")
    try:
      restored = self.best.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
      _check_restored(restored.state, step)
    except Exception as e:  # as above
      logging.debug("Restoring %s failed.", self._path(self.best, step), exc_info=True)
      raise CheckpointError(f"the best checkpoint {self._path(self.best, step)} cannot be "
                            f"restored ({_describe(e)})") from e
    return step, restored.state, restored.meta

  def check_best(self, template) -> bool:
    """False if the best checkpoint exists but does not restore; it is then reported and
    moved aside. (`template` restored from `latest`, so the config matches.)"""
    if self.best.latest_step() is None:
      return True
    try:
      self.restore_best(template)
    except CheckpointError as e:
      report(f"{e}; the best of the remaining validations will be used for test accuracy")
      self._quarantine(self.best, [self.best.latest_step()])
      return False
    return True

  def close(self) -> None:
    """Waits for writes in flight, then releases the managers."""
    self.latest.close()
    self.best.close()

  @staticmethod
  def _path(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(manager.directory, str(step))

  def _quarantine(self, manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Renames bad step directories to corrupt-<step>[-n]; orbax then no longer lists them."""
    if jax.process_index() == 0:
      for step in steps:
        source = self._path(manager, step)
        target = os.path.join(manager.directory, f"{QUARANTINE_PREFIX}{step}")
        n = 1
        while os.path.exists(target):
          n += 1
          target = os.path.join(manager.directory, f"{QUARANTINE_PREFIX}{step}-{n}")
        os.rename(source, target)
        report(f"moved the unreadable checkpoint {source} to {target} (nothing is deleted)")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("rmaat_jax checkpoint quarantine")
    manager.reload()


def _check_restored(state, step: int) -> None:
  """Catches corruption that decodes: a state from another step, or non-finite numbers."""
  if int(state.step) != step:
    raise ValueError(f"the state is from step {int(state.step)}, not {step}")
  if not tree_is_finite(state.params):
    raise ValueError("the parameters contain NaN or Inf")


class PreemptionWatcher:
  """Within `with`: SIGTERM (a scheduler's preemption notice) only sets a flag, which the
  train loop reads after each step with `reached(step)`.

  With several processes JAX's preemption service (`jax.distributed`) catches SIGTERM and
  orbax's `reached_preemption` picks one step for all hosts; its handler is left alone.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager = manager
    self._previous = None
    self.requested = False

  def __enter__(self) -> PreemptionWatcher:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    return self.requested or self._manager.reached_preemption(step)

