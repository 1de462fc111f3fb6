"""Command line: python -m rmaat_jax.main --config configs/lra_listops.py --workdir DIR

Config values are overridden with ml_collections flags (`--config.train.num_steps=100`).
A run started again with the same workdir resumes from its latest checkpoint; `--eval_only`
reports the test accuracy of the workdir's best checkpoint. User errors (bad config values,
missing data) print one line `error: ...` and exit with status 2.
"""

import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from rmaat_jax.config_checks import validate_config
from rmaat_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, results.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the best checkpoint in --workdir.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a user's flag mistake reported as one `error:` line, status 2.

  Covers an unknown or mistyped override (`--config.train.num_stepz=5`), a value of the
  wrong type, a missing required flag, an unknown preset (`lra_image.py:gpu`) and a
  config file that does not load.
  """
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # ml_collections loads lazily: surface a broken config file now
  except Exception as e:  # absl's, ml_collections' and the config file's own errors
    print(f"error: {_flag_error_message(e, argv)}", file=sys.stderr)
    sys.exit(2)
  return rest


def _innermost_user_error(error: BaseException | None) -> UserError | None:
  """The original UserError behind absl's and ml_collections' wrappers (a bad preset)."""
  found = None
  while error is not None:
    if isinstance(error, UserError):
      found = error
    error = error.__cause__ or error.__context__
  return found


def _flag_error_message(error: Exception, argv: list[str]) -> str:
  user_error = _innermost_user_error(error)
  if user_error is not None:
    return str(user_error)
  text = str(error)
  if isinstance(error, (AttributeError, KeyError)):  # an override naming no config field
    field = re.search(r"'([A-Za-z0-9_]+)", text)
    field = field.group(1) if field else "?"
    flag = next((a.split("=")[0] for a in argv
                 if a.startswith("--config.") and field in a.split("=")[0].split(".")),
                "--config.*")
    hint = re.search(r'Did you mean "([A-Za-z0-9_]+)"', text)
    hint = f"did you mean '{hint.group(1)}'? " if hint else ""
    return (f"{flag}: '{field}' is not a config field; {hint}configs/default.py lists "
            "every field")
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


def initialize_distributed(config) -> None:
  """Multi-host: one process per host (or per GPU), joined before any JAX work."""
  dist = config.get("distributed")
  if dist is None or not dist.enabled:
    return
  import jax

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
    validate_config(config)  # before joining other processes, preparing data, compiling
    # JAX and the trainer load only now: a config mistake is reported in a fraction of a
    # second.
    import jax

    from rmaat_jax import train

    initialize_distributed(config)
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    if FLAGS.eval_only:
      results = train.evaluate_workdir(config, FLAGS.workdir)
    else:
      results = train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("Results: %s", results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
