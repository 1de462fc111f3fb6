"""Task configs: each module's `get_config()` returns an ml_collections ConfigDict."""

import importlib

import ml_collections


def load(name: str) -> ml_collections.ConfigDict:
  """`load("lra_listops")` == configs/lra_listops.py's get_config() (as --config reads it)."""
  return importlib.import_module(f"configs.{name}").get_config()
