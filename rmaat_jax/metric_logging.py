"""TensorBoard scalars and console lines for a training run, without TensorFlow.

clu's metric writers need TensorFlow, which the GPU hosts do not have. The trainer needs
only scalars and hyper-parameters: they go to TensorBoard event files through the
tensorboard package's own writer (the same events clu's SummaryWriter writes), and to the
console as one line per step. One code path with and without TensorFlow: for a local workdir
the writer uses tensorboard's own file API even where TensorFlow is installed (importing
TensorFlow for it cost a tiny run ~4 s of start-up and ~0.5 GB; CHANGELOG.md); a remote
one (`gs://...`) goes through TensorFlow's file systems where installed. The progress
reporter logs steps/s and the ETA like clu's ReportProgress.
"""

from __future__ import annotations

import logging
import sys
import time
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from rmaat_jax import console


def _tensorboard_without_tensorflow() -> None:
  """Makes tensorboard use its TensorFlow stub (local files) even where TensorFlow is
  installed. `tensorboard.compat.notf` is tensorboard's own switch for this (the module its
  no_tensorflow build target adds): tensorboard.compat.tf checks for it on first use, once
  per process: it has no effect if tensorboard already resolved `tf`, and a later remote
  logdir in the same process then goes through the stub's file systems (fsspec)."""
  name = "tensorboard.compat.notf"
  sys.modules.setdefault(name, types.ModuleType(name))


class EventFileWriter:
  """The part of clu's MetricWriter interface the trainer uses, on tensorboard's writer.

  `logdir=None` (processes other than the chief): console lines only.
  """

  def __init__(self, logdir: str | None):
    self._writer = None
    if logdir is not None:
      if "://" not in logdir:
        _tensorboard_without_tensorflow()
      from tensorboard.summary.writer.event_file_writer import EventFileWriter as _Writer

      # A remote logdir imports TensorFlow where installed, which prints banners from C++.
      with console.native_stderr_silenced():
        self._writer = _Writer(logdir)

  def _add(self, step: int, values: list) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    if self._writer is not None:
      self._writer.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any], log: bool = True) -> None:
    from tensorboard.compat.proto import summary_pb2

    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=v)
                     for k, v in values.items()])
    if log:
      logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """For TensorBoard's HParams tab (not logged: workdir/config.json holds the config)."""
    from tensorboard.plugins.hparams import summary_v2

    self._add(0, list(summary_v2.hparams_pb(dict(hparams)).value))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class ProgressReporter:
  """Logs steps/s and the ETA every `every_steps` (and writes steps_per_sec)."""

  def __init__(self, num_train_steps: int, writer: EventFileWriter, every_steps: int):
    self._total, self._writer, self._every = num_train_steps, writer, every_steps
    self._last_step, self._last_time = None, None

  def __call__(self, step: int) -> None:
    now = time.time()
    if self._last_step is None:  # the first step includes compilation: time from here
      self._last_step, self._last_time = step, now
      return
    if step % self._every and step < self._total:
      return
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    eta_min = (self._total - step) / max(rate, 1e-9) / 60
    logging.info("Step %d/%d: %.2f steps/s, ETA %.1f min", step, self._total, rate, eta_min)
    self._writer.write_scalars(step, {"steps_per_sec": rate}, log=False)  # said just above
    self._last_step, self._last_time = step, now


def create_writer_and_progress(workdir: str, num_train_steps: int, is_chief: bool,
                               every_steps: int) -> tuple[EventFileWriter, ProgressReporter]:
  """(writer, progress hook); only the chief process writes event files."""
  writer = EventFileWriter(workdir if is_chief else None)
  return writer, ProgressReporter(num_train_steps, writer, every_steps)
