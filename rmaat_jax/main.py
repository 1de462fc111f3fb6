"""Command line: python -m rmaat_jax.main --config configs/lra_listops.py --workdir DIR

Config values are overridden with ml_collections flags (`--config.train.num_steps=100`).
A run started again with the same workdir resumes from its latest checkpoint; `--eval_only`
reports the test accuracy of the workdir's best checkpoint. User errors (bad config values,
missing data) print one line `error: ...` and exit with status 2.
"""

import logging
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from rmaat_jax import train
from rmaat_jax.data.builders import DataMissingError
from rmaat_jax.models.config import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, results.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the best checkpoint in --workdir.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(config) -> None:
  """Multi-host: one process per host (or per GPU), joined before any JAX work."""
  dist = config.get("distributed")
  if dist is None or not dist.enabled:
    return
  kwargs = {}
  if dist.coordinator_address:
    kwargs = dict(coordinator_address=dist.coordinator_address,
                  num_processes=dist.num_processes, process_id=dist.process_id)
  jax.distributed.initialize(**kwargs)  # no arguments: SLURM / cloud auto-detection


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  config = FLAGS.config
  try:
    initialize_distributed(config)
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    if FLAGS.eval_only:
      results = train.evaluate_workdir(config, FLAGS.workdir)
    else:
      results = train.train_and_evaluate(config, FLAGS.workdir)
  except (ConfigError, DataMissingError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("Results: %s", results)


if __name__ == "__main__":
  app.run(main)
