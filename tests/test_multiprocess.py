"""Data parallelism: devices and processes on one machine, standing in for a cluster.

One process with 4 forced CPU devices, and two processes joined by
`jax.distributed.initialize` on the loopback address (CPU collectives: gloo) with 2 each,
train the same model on the same global batches as one device.
"""

import json

import numpy as np
import pytest

from experiments.reliability.faults import listops_flags, run_main, run_two_processes

# Full-rate updates from the first step (no warmup), so a wrong gradient mean would show.
FLAGS = {"train.batch_size": 8, "train.num_steps": 3, "train.log_every": 1,
         "train.eval_every": 3, "train.checkpoint_every": 3, "model.dropout_rate": 0.0,
         "train.warmup_steps": 0, "train.learning_rate": 3e-3}


@pytest.mark.cpu_only(reason="forced CPU host devices; 2 processes over gloo")
def test_four_devices_in_one_or_two_processes_train_like_one_device(listops_data, tmp_path):
  # Without the gradient mean over devices each device would step on its quarter batch's
  # gradient, and the losses would part by far more than 1e-5.
  for devices in (1, 4):
    code, stderr = run_main(tmp_path / f"d{devices}", *listops_flags(listops_data, **FLAGS),
                            devices=devices)
    assert code == 0, stderr

  # A fresh data dir: process 0 generates and prepares, process 1 waits for it (barrier).
  flags = listops_flags(tmp_path / "tfds", **FLAGS)
  for code, log in run_two_processes(tmp_path / "two", flags, tmp_path):
    assert code == 0, log.read_text()[-3000:]

  one = json.loads((tmp_path / "d1" / "results.json").read_text())
  for other in ("d4", "two"):
    run = json.loads((tmp_path / other / "results.json").read_text())
    assert run["steps"] == one["steps"] == 3
    np.testing.assert_allclose(run["train_loss"], one["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(run["test_loss"], one["test_loss"], rtol=1e-5)
    assert run["test_accuracy"] == one["test_accuracy"]
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3"]
