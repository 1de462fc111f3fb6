"""LRA data: generators (ListOps, Pathfinder), TFDS builders and grain input pipelines."""
