"""LRA data: generators (ListOps, Pathfinder), TFDS builders and grain input pipelines.

`get_datasets(config)` (pipeline.py) is the entry point. It is imported lazily so that the
generator command lines (`python -m rmaat_jax.data.listops`) start without TFDS and grain.
"""

__all__ = ["get_datasets"]


def __getattr__(name: str):
  if name == "get_datasets":
    from rmaat_jax.data.pipeline import get_datasets

    return get_datasets
  raise AttributeError(f"module 'rmaat_jax.data' has no attribute {name!r}")
