"""Multi-process data parallelism on one machine, standing in for a cluster.

Two processes joined by `jax.distributed.initialize` on the loopback address (CPU
collectives: gloo), each with 2 forced CPU devices, train the same model on the same
global batches as one process with 4 devices.
"""

import json

import numpy as np
import pytest

from experiments.reliability.faults import listops_flags, run_main, run_two_processes

# Full-rate updates from the first step (no warmup), so a wrong gradient mean would show.
FLAGS = {"train.batch_size": 8, "train.num_steps": 3, "train.log_every": 1,
         "train.eval_every": 3, "train.checkpoint_every": 3, "model.dropout_rate": 0.0,
         "train.warmup_steps": 0, "train.learning_rate": 3e-3}


@pytest.mark.cpu_only(reason="2 processes x 2 forced CPU host devices over gloo")
def test_two_processes_train_like_one_process_with_as_many_devices(listops_data, tmp_path):
  code, stderr = run_main(tmp_path / "one", *listops_flags(listops_data, **FLAGS), devices=4)
  assert code == 0, stderr

  # A fresh data dir: process 0 generates and prepares, process 1 waits for it (barrier).
  flags = listops_flags(tmp_path / "tfds", **FLAGS)
  for code, log in run_two_processes(tmp_path / "two", flags, tmp_path):
    assert code == 0, log.read_text()[-3000:]

  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert two["steps"] == one["steps"] == 3
  np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-5)
  np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-5)
  assert two["test_accuracy"] == one["test_accuracy"]
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3"]
