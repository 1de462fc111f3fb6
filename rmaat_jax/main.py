"""Trains and evaluates RMAAT on an LRA task.

  python -m rmaat_jax.main --config configs/lra_listops.py --workdir DIR
  python -m rmaat_jax.main --config configs/lra_listops.py:cpu --workdir DIR  # 2 CPU cores

Config values are overridden with ml_collections flags (`--config.train.num_steps=100`).
A run started again with the same workdir resumes from its latest checkpoint; `--eval_only`
reports the test accuracy of the workdir's best checkpoint. User errors (bad config values,
missing data) print one line `error: ...` and exit with status 2. Only the project's log
lines are shown; `--verbosity=1` adds every library's.
"""

import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from rmaat_jax import console
from rmaat_jax.config_checks import check_devices, validate_config
from rmaat_jax.configs import TASK_CONFIG_DIR
from rmaat_jax.errors import UserError


def _config_help() -> str:
  """The task configs and presets, for --help."""
  folder = TASK_CONFIG_DIR  # the repository's top-level configs/ (absent from a wheel)
  tasks = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
  where = f"in {folder}" if tasks else f"{folder} not found: give the file's path"
  return ("Task config file, optionally followed by presets: configs/TASK.py[:PRESETS]. "
          f"Task configs ({where}): {', '.join(tasks)}. Presets, comma-separated: "
          "a model (rmaat: the default; rmt: softmax attention, BPTT, no retention; rlt: "
          "linear attention, BPTT, no retention) and a size (cpu: minutes on 2 CPU cores), "
          "e.g. configs/lra_listops.py:rmt,cpu. Override any field with --config.SECTION.FIELD"
          "=VALUE (rmaat_jax/configs/default.py lists them).")


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, results.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the best checkpoint in --workdir.")
flags.DEFINE_bool("eval_other_length", False,
                  "With --eval_only: the config may read more or fewer segments (of the "
                  "trained segment length) than the run was trained on, e.g. "
                  "--config.model.num_segments=64 (recall: also "
                  "--config.data.recall.num_segments=64); writes eval_results_T<N>.json.")
config_flags.DEFINE_config_file("config", None, _config_help(), lock_config=True)
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
    console.user_line("error", _flag_error_message(e, argv))
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
    return (f"{flag}: '{field}' is not a config field; {hint}"
            "rmaat_jax/configs/default.py lists every field")
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


def _devices(jax) -> str:
  devices = jax.local_devices()
  where = f" (process {jax.process_index()}/{jax.process_count()})" \
      if jax.process_count() > 1 else ""
  return f"{len(devices)} {devices[0].platform.upper()} device(s){where}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  console.configure(FLAGS.verbosity)
  config = FLAGS.config
  try:
    validate_config(config)  # before joining other processes, preparing data, compiling
    # JAX and the trainer load only now: a config mistake is reported in a fraction of a
    # second.
    import jax

    from rmaat_jax import train

    initialize_distributed(config)
    check_devices(config, jax.device_count(), jax.process_count())
    model = config.model
    logging.info("%s %s: %s attention, %s, %d layers of width %d, %d segments; %d steps "
                 "into %s on %s.", "Evaluating" if FLAGS.eval_only else "Training",
                 config.data.dataset, model.attention, model.backprop, model.num_layers,
                 model.emb_dim, model.num_segments, config.train.num_steps, FLAGS.workdir,
                 _devices(jax))
    if FLAGS.eval_other_length and not FLAGS.eval_only:
      raise UserError("--eval_other_length only applies with --eval_only (training always "
                      "uses the workdir's length)")
    if FLAGS.eval_only:
      results = train.evaluate_workdir(config, FLAGS.workdir, FLAGS.eval_other_length)
    else:
      results = train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    console.user_line("error", str(e))
    sys.exit(2)
  logging.info("Results: %s", results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
