"""The trainer end to end: every task config, devices, kill and resume, learning, errors."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import max_min_rows, write_aan, write_fashion_mnist, write_listops
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.reliability.faults import (
  listops_flags,
  results_without_resume,
  run_main,
)
from rmaat_jax import configs, train
from rmaat_jax.data import pipeline
from rmaat_jax.data.tasks import TASKS

TINY_MODEL = dict(emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32, dropout_rate=0.1)
TINY_TRAIN = dict(num_steps=2, batch_size=4, eval_every=1, checkpoint_every=2, log_every=1,
                  num_eval_batches=1, warmup_steps=1)


def tiny_config(name, tmp_path, **data):
  config = configs.load(name)
  config.model.update(TINY_MODEL)
  if not TASKS[config.data.dataset].fixed_length:  # pixel tasks keep their 1024
    config.model.update(seq_len=64, num_segments=2)
  config.train.update(TINY_TRAIN)
  config.data.update(data_dir=str(tmp_path / "tfds"), generate_sizes=(24, 8, 8), **data)
  return config


def check_results(results, workdir, steps=2):
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  events = EventAccumulator(str(workdir))  # TensorBoard's reader of the run's event file
  events.Reload()
  assert {"train_loss", "train_accuracy", "learning_rate", "val_accuracy", "val_loss",
          "test_accuracy"} <= set(events.Tags()["scalars"])
  assert events.Scalars("test_accuracy")[-1].value == np.float32(results["test_accuracy"])
  assert results["steps"] == steps and results["resumed_from_step"] is None
  assert 1 <= results["best_step"] <= steps
  assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["val_accuracy"] <= 1.0
  assert np.isfinite(results["train_loss"])
  assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard events written"


def test_event_files_for_a_local_workdir_do_not_import_tensorflow(tmp_path):
  # TensorFlow is installed here; importing it for TensorBoard's file API cost a run ~4 s of
  # start-up and ~0.5 GB. A fresh interpreter, since this one may have imported it already.
  script = (
      "import sys\n"
      "from rmaat_jax.metric_logging import EventFileWriter\n"
      f"writer = EventFileWriter({str(tmp_path)!r})\n"
      "writer.write_scalars(3, {'train_loss': 0.25}, log=False)\n"
      "writer.write_hparams({'model.emb_dim': 16})\n"
      "writer.close()\n"
      "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
  process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120)
  assert process.returncode == 0, process.stderr
  events = EventAccumulator(str(tmp_path))
  events.Reload()
  [scalar] = events.Scalars("train_loss")
  assert (scalar.step, scalar.value) == (3, 0.25)


@pytest.mark.parametrize("name, dtype", [("lra_listops", "float32"),
                                         ("lra_pathfinder", "bfloat16")])
def test_one_step_on_generated_data(name, dtype, tmp_path):
  config = tiny_config(name, tmp_path, generate=True)
  config.train.compute_dtype = dtype
  check_results(train.train_and_evaluate(config, str(tmp_path / "work")), tmp_path / "work")


@pytest.mark.parametrize("name", ["lra_text", "lra_image"])
def test_one_step_on_mock_catalog_data(name, tmp_path, monkeypatch):
  monkeypatch.setattr(pipeline, "check_reachable", lambda url: None)  # mock_data downloads
  config = tiny_config(name, tmp_path, download=True)
  with tfds.testing.mock_data(num_examples=8):
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
  check_results(results, tmp_path / "work")


def test_one_step_retrieval_on_lra_files(tmp_path):
  write_aan(tmp_path / "tsv_data")
  config = tiny_config("lra_retrieval", tmp_path, manual_dir=str(tmp_path / "tsv_data"))
  check_results(train.train_and_evaluate(config, str(tmp_path / "work")), tmp_path / "work")


def test_one_step_fashion_mnist_substitute(tmp_path):
  write_fashion_mnist(tmp_path / "fmnist")
  config = tiny_config("lra_image", tmp_path, dataset="fashion_mnist",
                       manual_dir=str(tmp_path / "fmnist"))
  results = train.train_and_evaluate(config, str(tmp_path / "work"))
  check_results(results, tmp_path / "work")
  assert "SUBSTITUTE" in results["data_source"]


def test_loss_goes_down_on_a_learnable_task(tmp_path):
  """[MAX a b] / [MIN a b]: the tokens sit in segment 1, the answer is read after segment 2,
  so the memory has to carry them. Predicting the label marginal gives ~2.2 nats."""
  write_listops(tmp_path / "maxmin", max_min_rows())
  config = configs.load("lra_listops")
  config.model.update(seq_len=8, num_segments=2, emb_dim=32, num_heads=2, num_layers=1,
                      mlp_dim=64, dropout_rate=0.0)
  config.train.update(num_steps=300, batch_size=32, eval_every=300, checkpoint_every=300,
                      log_every=50, num_eval_batches=0, warmup_steps=20, learning_rate=3e-3)
  config.data.update(generate=False, manual_dir=str(tmp_path / "maxmin"),
                     data_dir=str(tmp_path / "tfds"))
  results = train.train_and_evaluate(config, str(tmp_path / "work"))
  assert results["train_loss"] < 1.2, results
  assert results["test_accuracy"] > 0.4, results


# --- the command line, in subprocesses ---------------------------------------------------

@pytest.mark.cpu_only(reason="forces 2 CPU host devices; a GPU host shows its own")
@pytest.mark.slow  # test_faults.py kills during a checkpoint write and resumes, by default
def test_killed_run_resumes_to_identical_results(listops_data, tmp_path):
  flags = listops_flags(listops_data, **{"train.num_steps": 12, "train.checkpoint_every": 3,
                                         "train.eval_every": 3, "train.log_every": 2})
  code, stderr = run_main(tmp_path / "straight", *flags)
  assert code == 0, stderr

  process = run_main(tmp_path / "killed", *flags, wait=False)
  first = tmp_path / "killed" / "checkpoints" / "3"
  deadline = time.time() + 300
  while not first.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (tmp_path / "killed" / "results.json").exists()

  code, stderr = run_main(tmp_path / "killed", *flags)
  assert code == 0, stderr
  straight, _ = results_without_resume(tmp_path / "straight")
  resumed, raw = results_without_resume(tmp_path / "killed")
  assert raw["resumed_from_step"] is not None and raw["resumed_from_step"] >= 3
  assert resumed == straight


@pytest.mark.parametrize("overrides, message", [
    (["--config.model.num_segments=3"], "model.seq_len=2048 is not divisible"),
    (["--config.train.num_steps=0"], "train.num_steps=0"),
    (["--config.model.attention=flash"], "model.attention='flash'"),
    (["--config.data.generate=False", "--config.data.manual_dir=/nonexistent"],
     "ListOps: could not find basic_train.tsv"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, overrides, message):
  code, stderr = run_main(tmp_path / "work", f"--config.data.data_dir={tmp_path}", *overrides)
  assert code == 2, stderr
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], stderr
  assert "Traceback" not in stderr


@pytest.mark.cpu_only(reason="forces 2 CPU host devices; a GPU host shows its own")
def test_batch_not_divisible_by_devices(tmp_path):
  code, stderr = run_main(tmp_path / "work", "--config.train.batch_size=3",
                          f"--config.data.data_dir={tmp_path}", devices=2)
  assert code == 2 and "train.batch_size=3 is not divisible by the 2 devices" in stderr
