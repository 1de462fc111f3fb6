"""Task configs: each module's `get_config()` returns an ml_collections ConfigDict."""

import importlib

import ml_collections


def load(name: str, preset: str = "") -> ml_collections.ConfigDict:
  """`load("lra_listops", "rmt,cpu")` == `--config configs/lra_listops.py:rmt,cpu`."""
  module = importlib.import_module(f"configs.{name}")
  return module.get_config(preset) if preset else module.get_config()
