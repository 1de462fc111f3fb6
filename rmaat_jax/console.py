"""What a run prints: the project's own log lines by default, every library's on request.

A short training run used to print mostly orbax's INFO chatter, TFDS progress bars and
TensorFlow/XLA start-up banners. By default (`--verbosity=0`) only records logged from this
project reach the console, plus any library's errors; `--verbosity=1` (absl's flag) shows
everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Where the records we keep come from (logging.LogRecord.pathname fragments).
_PROJECT_PATHS = tuple(os.sep + p + os.sep for p in ("rmaat_jax", "configs", "experiments"))

_quiet = False


# asyncio's reports of futures nobody awaited: after orbax fails to restore a corrupt
# checkpoint (which the trainer reports in its own warning line), its other reads end so.
_ABANDONED = ("Task exception was never retrieved", "Future exception was never retrieved")


class ProjectOnly(logging.Filter):
  """Passes this project's records and any record at ERROR or above (but asyncio's
  abandoned futures)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name == "asyncio" and str(record.msg).startswith(_ABANDONED):
      return False
    if record.levelno >= logging.ERROR:
      return True
    return any(p in record.pathname for p in _PROJECT_PATHS)


def _closed_event_loop(error_type, error, traceback) -> bool:
  """An "Event loop is closed" error raised inside asyncio's call_soon_threadsafe.

  orbax restores a checkpoint inside an asyncio loop; when the restore fails (a corrupt
  checkpoint, which the trainer then moves aside) the loop closes while tensorstore's read
  futures are still pending, and each of them later completes on a C++ thread whose
  callback schedules into the closed loop. The error reaches sys.unraisablehook from there,
  not from any code of ours, once per pending read, and would print a traceback on a run
  that works."""
  if error_type is not RuntimeError or str(error) != "Event loop is closed":
    return False
  frames = []
  while traceback is not None:
    frames.append(traceback.tb_frame.f_code.co_name)
    traceback = traceback.tb_next
  return "call_soon_threadsafe" in frames


def _quiet_unraisablehook(hook):
  def unraisablehook(unraisable):
    if _closed_event_loop(unraisable.exc_type, unraisable.exc_value,
                          unraisable.exc_traceback):
      return  # --verbosity=1 keeps Python's own hook, which prints them
    hook(unraisable)
  return unraisablehook


def configure(verbosity: int) -> None:
  """Call before JAX, TensorFlow or TFDS are imported (their start-up lines are C++ logs)."""
  global _quiet
  _quiet = verbosity < 1
  if not _quiet:
    return
  sys.unraisablehook = _quiet_unraisablehook(sys.unraisablehook)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # XLA's C++ INFO lines
  for handler in logging.getLogger().handlers:
    handler.addFilter(ProjectOnly())
  # Libraries' deprecation notices and the like; the project's own warnings still show.
  warnings.filterwarnings("ignore")
  warnings.filterwarnings("default", module=r"(rmaat_jax|configs|experiments)(\.|$)")


def user_line(kind: str, message: str) -> None:
  """Prints `<kind>: <message>` (kind "error" or "warning") on stderr in one write, so that
  output of another thread (orbax's background tracebacks) cannot land inside the line."""
  sys.stderr.write(f"{kind}: {message}\n")
  sys.stderr.flush()


def quiet() -> bool:
  """True unless --verbosity >= 1: data preparation then hides TFDS's progress output."""
  return _quiet


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
  """When quiet: output of C++ code to file descriptor 2 is dropped inside the block.

  For TensorFlow's import (the tensorboard package's event writer uses it where it is
  installed), which prints oneDNN and CPU-feature banners through absl's C++ logging before
  any Python setting can stop it. Python exceptions are unaffected: they print after the block.
  """
  if not _quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
