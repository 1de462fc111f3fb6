"""Metrics of training and evaluation, and the training window between two logs.

`TrainWindow` accumulates the train metrics since the last log and checks that the loss
stays finite. The loss of step s is read only after step s + 1 has been dispatched (reading
it at once would make the host wait for every step), and at once before a log, a save or a
validation, so nothing non-finite is ever written. The window's sums are saved with each
checkpoint: a resumed run logs the same windows as an uninterrupted one.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import numpy as np
from clu import metrics


# (No `from __future__ import annotations` in this module: clu reads these annotations as
# metric classes, not strings.)
@flax.struct.dataclass
class Metrics(metrics.Collection):
  """Mean loss and accuracy, for training windows and evaluation alike."""

  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


class TrainWindow:
  """Train metrics since the last log. `diverged(what, step)` builds the error raised when
  the loss is NaN or Inf."""

  def __init__(self, saved: dict[str, Any] | None,
               diverged: Callable[[str, int], Exception]):
    self._metrics = _from_json(saved)
    self._diverged = diverged
    self._unchecked: tuple[int, Any] | None = None  # (step, loss) not yet read

  def add(self, step: int, step_metrics: Metrics) -> None:
    """Adds one step's metrics (on one device: unreplicated); checks the previous loss."""
    self.check_loss()
    self._unchecked = (step, step_metrics.loss.compute())
    self._metrics = (step_metrics if self._metrics is None
                     else self._metrics.merge(step_metrics))

  def check_loss(self) -> None:
    """Raises if the last added loss is NaN or Inf (waits for that step)."""
    if self._unchecked is not None:
      step, loss = self._unchecked
      self._unchecked = None
      if not np.isfinite(float(loss)):
        raise self._diverged(f"training loss is {float(loss)}", step)

  def pop(self) -> dict[str, float]:
    """The window's means as `train_<name>` scalars; starts a new window."""
    self.check_loss()
    scalars = {f"train_{k}": float(v) for k, v in self._metrics.compute().items()}
    self._metrics = None
    return scalars

  def to_json(self) -> dict[str, Any] | None:
    """The open window's sums; float32 -> JSON -> float32 is exact."""
    if self._metrics is None:
      return None
    return jax.tree_util.tree_map(lambda x: np.asarray(x).item(),
                                  flax.serialization.to_state_dict(self._metrics))


def _from_json(saved: dict[str, Any] | None) -> Metrics | None:
  if saved is None:
    return None
  empty = Metrics.empty()
  typed = jax.tree_util.tree_map(lambda t, v: np.asarray(v, np.asarray(t).dtype),
                                 flax.serialization.to_state_dict(empty), saved)
  return flax.serialization.from_state_dict(empty, typed)
