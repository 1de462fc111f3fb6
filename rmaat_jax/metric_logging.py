"""Metric writers and progress reports, with or without TensorFlow.

clu's writers and periodic actions import TensorFlow. Where it is installed we use them
(`create_default_writer`: TensorBoard events in the workdir plus console logging, and
`periodic_actions.ReportProgress`). Where it is not (the GPU hosts here), the same scalars
and hyper-parameters go to TensorBoard event files through the tensorboard package's own
event writer, and a small progress reporter logs steps/s and the ETA.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rmaat_jax import console


def tensorflow_available() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


class EventFileWriter:
  """The subset of clu's MetricWriter the trainer uses, on tensorboard's event writer."""

  def __init__(self, logdir: str, log_to_console: bool = True):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter as _Writer

    self._writer = _Writer(logdir)
    self._log = log_to_console

  def _event(self, step: int, values: list):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2.Event(wall_time=time.time(), step=int(step),
                           summary=summary_pb2.Summary(value=values))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    from tensorboard.compat.proto import summary_pb2

    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
              for k, v in scalars.items()]
    self._writer.add_event(self._event(step, values))
    if self._log:
      logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}"
                                              for k, v in scalars.items()))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import summary_v2

    # The hparams plugin's protobuf, built without TensorFlow.
    pb = summary_v2.hparams_pb(dict(hparams))
    self._writer.add_event(self._event(0, list(pb.value)))
    if self._log:
      logging.info("Hyper-parameters: %s", dict(hparams))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class ProgressReporter:
  """Logs steps/s and the ETA every `every_steps` (clu's ReportProgress without TF)."""

  def __init__(self, num_train_steps: int, writer, every_steps: int):
    self._total, self._writer, self._every = num_train_steps, writer, every_steps
    self._last_step, self._last_time = None, None

  def __call__(self, step: int) -> None:
    now = time.time()
    if self._last_step is None:
      self._last_step, self._last_time = step, now
      return
    if step - self._last_step < self._every and step < self._total:
      return
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    eta_min = (self._total - step) / max(rate, 1e-9) / 60
    self._writer.write_scalars(step, {"steps_per_sec": rate})
    logging.info("Step %d/%d: %.2f steps/s, ETA %.1f min", step, self._total, rate, eta_min)
    self._last_step, self._last_time = step, now


def create_writer_and_progress(workdir: str, num_train_steps: int, is_chief: bool,
                               every_steps: int):
  """(writer, progress hook): clu's where TensorFlow is installed, else our fallback."""
  if tensorflow_available():
    with console.native_stderr_silenced():  # TensorFlow's import banners
      from clu import metric_writers, periodic_actions

    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    progress = periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                               writer=writer, every_steps=every_steps)
    return writer, progress
  logging.warning("TensorFlow is not installed: logging to TensorBoard through the "
                  "tensorboard package's event writer instead of clu's writers.")
  writer = EventFileWriter(workdir) if is_chief else _ConsoleWriter()
  return writer, ProgressReporter(num_train_steps, writer, every_steps)


class _ConsoleWriter:
  """Non-chief processes log to the console only."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    logging.info("[%d] %s", step, {k: float(np.asarray(v)) for k, v in scalars.items()})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    logging.info("Hyper-parameters: %s", dict(hparams))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass
