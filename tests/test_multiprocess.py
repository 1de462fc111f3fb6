"""Multi-process data parallelism on one machine, standing in for a cluster.

Two processes joined by `jax.distributed.initialize` on the loopback address (CPU
collectives: gloo), each with 2 forced CPU devices, train the same model on the same
global batches as one process with 4 devices.
"""

import json
import socket
import subprocess

import numpy as np

from experiments.faults import (
  ROOT,
  listops_flags,
  main_command,
  main_env,
  run_main,
)

# Full-rate updates from the first step (no warmup), so a wrong gradient mean would show.
FLAGS = {"train.batch_size": 8, "train.num_steps": 3, "train.log_every": 1,
         "train.eval_every": 3, "train.checkpoint_every": 3, "model.dropout_rate": 0.0,
         "train.warmup_steps": 0, "train.learning_rate": 3e-3}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process_with_as_many_devices(listops_data, tmp_path):
  code, stderr = run_main(tmp_path / "one", *listops_flags(listops_data, **FLAGS), devices=4)
  assert code == 0, stderr

  # A fresh data dir: process 0 generates and prepares, process 1 waits for it (barrier).
  distributed = [f"--config.distributed.coordinator_address=127.0.0.1:{free_port()}",
                 "--config.distributed.enabled=True", "--config.distributed.num_processes=2"]
  flags = listops_flags(tmp_path / "tfds", **FLAGS) + distributed
  processes = []
  for index in range(2):
    log = open(tmp_path / f"process{index}.log", "w")  # noqa: SIM115 -- closed below
    processes.append((subprocess.Popen(
        main_command(tmp_path / "two", *flags, f"--config.distributed.process_id={index}"),
        cwd=ROOT, env=main_env(2), stdout=subprocess.DEVNULL, stderr=log, text=True), log))
  for process, log in processes:
    process.wait(timeout=600)
    log.close()
  for index, (process, _) in enumerate(processes):
    assert process.returncode == 0, (tmp_path / f"process{index}.log").read_text()[-3000:]

  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert two["steps"] == one["steps"] == 3
  np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-5)
  np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-5)
  assert two["test_accuracy"] == one["test_accuracy"]
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3"]
