"""What the task configs share: `default` (every field and its default), `presets` (:rmt,
:rlt, :cpu), and `load`, which reads a task config file of the repository's configs/ folder.

The task configs themselves (configs/lra_*.py, configs/memory_recall.py) are files at the
repository's top level, loaded by path (`--config configs/lra_listops.py:cpu`); they import
only `rmaat_jax` (`from rmaat_jax.configs import default, presets`).
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

from rmaat_jax.errors import ConfigError

# The repository's top-level configs/ folder (next to the rmaat_jax package in a checkout or
# an editable install; absent from a wheel install).
TASK_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def task_config_path(name: str) -> pathlib.Path:
  """configs/<name>.py of the repository; ConfigError if the folder or file is missing."""
  if not TASK_CONFIG_DIR.is_dir():
    raise ConfigError(
        f"no task config folder {TASK_CONFIG_DIR} (rmaat_jax is installed without its "
        "repository); pass the config file's path with --config, e.g. "
        "--config /path/to/rmaat_jax/configs/lra_listops.py")
  path = TASK_CONFIG_DIR / f"{name}.py"
  if not path.is_file():
    names = ", ".join(p.stem for p in sorted(TASK_CONFIG_DIR.glob("*.py")))
    raise ConfigError(f"no task config {path}; task configs: {names}")
  return path


def load(name: str, preset: str = "") -> ml_collections.ConfigDict:
  """`load("lra_listops", "rmt,cpu")` == `--config configs/lra_listops.py:rmt,cpu`."""
  path = task_config_path(name)
  # Loaded by path, as ml_collections' --config does: the task configs are not a package.
  # Named after the file (not put in sys.modules), as console.py's warning filter expects.
  spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()
