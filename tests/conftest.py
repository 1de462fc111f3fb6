"""Test-wide settings. XLA's CPU backend spends most of a tiny model's compile time in LLVM
optimisation; the tests compile many small programs and run each once or twice, so they
use optimisation level 0 (same HLO passes, same numerics contract, 2-3x faster compiles).

On another backend (the GPU campaign's tests phase) float32 matrix products run at full
precision, so that a tolerance means the same as on the CPU (XLA's GPU default uses TF32),
and tests marked `cpu_only` (behaviour that exists on the CPU backend only, each saying why)
are skipped.

The CPU backend's newer fusion emitters take ~1.5x as long to compile these programs as
the classic ones (`--xla_cpu_use_fusion_emitters=false`; tests/test_model.py and
tests/test_gradient_oracle.py: 171-188 s -> 119-127 s on one core). XLA aborts the process on
a flag it does not know, so a newer XLA that dropped it is probed for first (once, in a
subprocess; xdist workers inherit the result through XLA_FLAGS)."""

import os
import subprocess
import sys

FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0",
                      "--xla_cpu_use_fusion_emitters=false")


def _xla_accepts(flag: str) -> bool:
  probe = subprocess.run(
      [sys.executable, "-c", "import jax; jax.devices('cpu')"], capture_output=True,
      env={**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}"},
      timeout=300)
  return probe.returncode == 0


for _flag in FAST_COMPILE_FLAGS:
  _name = _flag.split("=")[0]
  if _name not in os.environ.get("XLA_FLAGS", "") and (
      _name == "--xla_backend_optimization_level" or _xla_accepts(_flag)):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()


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
