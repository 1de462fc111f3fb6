"""Test-wide settings. XLA's CPU backend spends most of a tiny model's compile time in LLVM
optimisation; the tests compile many small programs and run each once or twice, so they
use optimisation level 0 (same HLO passes, same numerics contract, 2-3x faster compiles).

On another backend (the GPU campaign's tests phase) float32 matrix products run at full
precision, so that a tolerance means the same as on the CPU (XLA's GPU default uses TF32),
and tests marked `cpu_only` (behaviour that exists on the CPU backend only, each saying why)
are skipped."""

import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


import jax  # noqa: E402
import pytest  # noqa: E402

from experiments.reliability.faults import listops_flags, run_main  # noqa: E402

if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")


def pytest_collection_modifyitems(config, items):
  if jax.default_backend() == "cpu":
    return
  for item in items:
    marker = item.get_closest_marker("cpu_only")
    if marker is not None:
      why = marker.kwargs.get("reason", "")
      item.add_marker(pytest.mark.skip(reason=f"cpu_only on {jax.default_backend()}: {why}"))


def prepare_listops_data(data_dir) -> None:
  """Generates and prepares the tiny ListOps set in `data_dir` with a one-step run (which
  also fills this worker's compilation cache with the tiny model's programs)."""
  code, stderr = run_main(data_dir / "warmup", *listops_flags(data_dir, **{
      "train.num_steps": 1}))
  assert code == 0, stderr


@pytest.fixture(scope="session")
def listops_data(tmp_path_factory):
  """A prepared tiny generated ListOps set, shared by every subprocess test of a worker."""
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare_listops_data(data_dir)
  return data_dir
