"""Test-wide settings. XLA's CPU backend spends most of a tiny model's compile time in LLVM
optimisation; the tests compile many small programs and run each once or twice, so they
use optimisation level 0 (same HLO passes, same numerics contract, 2-3x faster compiles)."""

import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


import pytest  # noqa: E402

from experiments.faults import listops_flags, run_main  # noqa: E402


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
