"""Property-based checks over the config space (hypothesis).

Every valid config builds a model whose forward pass has the right shape; every config with
one invalid field is rejected with a one-line ConfigError naming that field; through the
command line that is one `error:` line and exit status 2.
"""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.reliability.faults import error_lines, run_main
from rmaat_jax.config_checks import (
    COMPUTE_DTYPES,
    TRAIN_NON_NEGATIVE_FLOATS,
    TRAIN_POSITIVE_INTS,
    validate_config,
)
from rmaat_jax.configs import default
from rmaat_jax.data.pipeline import TASKS
from rmaat_jax.data.tasks import MODEL_FACTS, PATHFINDER_DIFFICULTIES
from rmaat_jax.errors import ConfigError
from rmaat_jax.models import build_model
from rmaat_jax.models.config import (
  BOOL_FIELDS,
  CHOICES,
  FLOAT_FIELDS,
  MAX_DROPOUT_RATE,
  MIN_DROPOUT_RATE,
  POSITIVE_INT_FIELDS,
)

NOT_A_POSITIVE_INT = st.sampled_from([0, -1, -7, True, 2.5, "8", None])
NOT_A_FINITE_NON_NEGATIVE = st.one_of(st.floats(max_value=-1e-9), st.just(math.nan),
                                      st.just(math.inf), st.just("0.1"), st.just(None))
# HYPOTHESIS_PROFILE=campaign runs 1000 examples per property (experiments/RESULTS.md).
settings.register_profile("default", max_examples=40, derandomize=True)
settings.register_profile("campaign", max_examples=1000, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The model's field kinds, as the model defines them, less what the dataset sets.
CONFIG_BOOLS = [n for n in BOOL_FIELDS if n not in MODEL_FACTS]
CONFIG_INTS = [n for n in POSITIVE_INT_FIELDS if n not in MODEL_FACTS]
DATA_FACTS = [n for n in MODEL_FACTS if n != "seq_len"]  # seq_len is also a config choice


@st.composite
def valid_configs(draw) -> ml_collections.ConfigDict:
  dataset = draw(st.sampled_from(sorted(TASKS)))
  task = TASKS[dataset]
  recall = dict(default.get_config().data.recall)
  if dataset == "recall":  # its length is data.recall's: T segments of S tokens
    num_segments = draw(st.sampled_from([1, 2, 4, 8]))
    recall.update(num_segments=num_segments, segment_len=draw(st.integers(4, 16)),
                  num_pairs=draw(st.integers(1, 2)), num_keys=draw(st.integers(2, 20)),
                  num_values=draw(st.integers(1, 12)))
    seq_len = draw(st.sampled_from([0, num_segments * recall["segment_len"]]))
  elif task.fixed_length:  # pixel tasks: exactly 1024 tokens (or 0: the dataset's)
    num_segments = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    seq_len = draw(st.sampled_from([0, task.seq_len]))
  else:
    num_segments = draw(st.integers(1, 4))
    seq_len = num_segments * draw(st.integers(1, 8))
  num_heads = draw(st.integers(1, 3))
  model = dict(
      seq_len=seq_len, num_segments=num_segments,
      num_memory_tokens=draw(st.integers(1, 3)), emb_dim=num_heads * draw(st.integers(1, 4)),
      num_heads=num_heads, num_layers=draw(st.integers(1, 2)),
      mlp_dim=draw(st.integers(1, 16)),
      dropout_rate=draw(st.one_of(st.just(0.0), st.floats(MIN_DROPOUT_RATE, 0.9))),
      position_scale=draw(st.floats(0.1, 8.0)), alpha=draw(st.floats(0.0, 2.0)),
      **{name: draw(st.booleans()) for name in CONFIG_BOOLS},
      **{k: draw(st.sampled_from(v)) for k, v in CHOICES.items()})
  if model["retention"] == "reset":  # no gradient crosses a segment to rescale
    model["retention_backward"] = "exact"
  num_steps = draw(st.integers(1, 10_000))
  train = dict(
      num_steps=num_steps, batch_size=draw(st.integers(1, 64)),
      eval_every=draw(st.integers(1, 1000)), checkpoint_every=draw(st.integers(1, 1000)),
      log_every=draw(st.integers(1, 100)), keep_checkpoints=draw(st.integers(1, 5)),
      num_eval_batches=draw(st.integers(0, 50)), learning_rate=draw(st.floats(0.0, 1.0)),
      warmup_steps=draw(st.integers(0, num_steps)), weight_decay=draw(st.floats(0.0, 1.0)),
      seed=draw(st.integers(0, 2 ** 31 - 1)), grad_clip=draw(st.floats(0.0, 10.0)),
      compute_dtype=draw(st.sampled_from(COMPUTE_DTYPES)))
  data = dict(dataset=dataset, data_dir="", download=draw(st.booleans()), manual_dir="",
              generate=task.generator == "recall" or (bool(task.generator)
                                                       and draw(st.booleans())),
              generate_sizes=tuple(draw(st.lists(st.integers(1, 100), min_size=3,
                                                 max_size=3))),
              generate_seed=draw(st.integers(0, 99)), generate_workers=draw(st.integers(1, 4)),
              pathfinder_difficulty=draw(st.sampled_from(PATHFINDER_DIFFICULTIES)),
              num_workers=draw(st.integers(0, 4)), recall=recall)
  distributed = dict(enabled=False, coordinator_address="", num_processes=1, process_id=0)
  drawn = dict(model=model, train=train, data=data, distributed=distributed)
  base = default.get_config().to_dict()  # what the draw leaves out (memory_limit_gib, ...)
  return ml_collections.ConfigDict({k: {**base[k], **v} for k, v in drawn.items()},
                                   type_safe=False)


def _unknown_name(known):
  return st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True).filter(lambda s: s not in known)


@st.composite
def invalid_configs(draw):
  """A valid config with one field made invalid -> (config, the field the error must name)."""
  config = draw(valid_configs())
  model, train, data = config.model, config.train, config.data
  mutation = draw(st.sampled_from([
      "model_int", "model_choice", "model_float", "model_bool", "unknown_model",
      "data_fact", "segments", "heads", "length", "train_int", "train_float", "warmup", "seed",
      "eval_batches", "dtype", "dataset", "generate", "sizes", "workers", "difficulty",
      "distributed"]))
  if mutation == "model_int":
    name = draw(st.sampled_from(CONFIG_INTS))
    model[name] = draw(NOT_A_POSITIVE_INT)
    return config, f"model.{name}"
  if mutation == "model_choice":
    name = draw(st.sampled_from(sorted(CHOICES)))
    model[name] = draw(st.one_of(st.text(max_size=8), st.integers())
                       .filter(lambda v, n=name: v not in CHOICES[n]))
    return config, f"model.{name}"
  if mutation == "model_float":
    name = draw(st.sampled_from(FLOAT_FIELDS))
    bad = {"dropout_rate": st.one_of(st.floats(min_value=MAX_DROPOUT_RATE),
                                     st.floats(max_value=-1e-9), st.just(math.nan),
                                     st.just("0.1"),  # and positive rates that round to 0:
                                     st.floats(5e-324, 2.0 ** -17)),
           "position_scale": st.one_of(st.floats(max_value=0.0), st.just(math.nan),
                                       st.just(math.inf), st.just(None)),
           "alpha": NOT_A_FINITE_NON_NEGATIVE}[name]
    model[name] = draw(bad)
    return config, f"model.{name}"
  if mutation == "model_bool":
    name = draw(st.sampled_from(CONFIG_BOOLS))
    model[name] = draw(st.sampled_from([1, 0, "yes", None]))
    return config, f"model.{name}"
  if mutation == "data_fact":  # set by the dataset: a config field of that name is unknown
    name = draw(st.sampled_from(DATA_FACTS))
    model[name] = 1
    return config, f"model.{name}"
  if mutation == "unknown_model":
    name = draw(_unknown_name(set(model)))
    model[name] = 1
    return config, f"model.{name}"
  if mutation == "segments":  # seq_len not divisible into segments
    length = model.seq_len or TASKS[data.dataset].seq_len
    model.num_segments = length + draw(st.integers(1, 5))
    return config, "model.num_segments"
  if mutation == "heads":  # emb_dim not divisible by heads
    model.num_heads = model.emb_dim + draw(st.integers(1, 5))
    return config, "model.num_heads"
  if mutation == "length":  # a pixel task has exactly 1024 tokens; a length must be >= 0
    pixels = [n for n, t in TASKS.items() if t.fixed_length]
    if data.dataset == "recall":
      model.seq_len = data.recall.num_segments * data.recall.segment_len + 1
    elif data.dataset in pixels:
      model.seq_len = draw(st.sampled_from([512, 2048, 1023]))
    else:
      model.seq_len = draw(st.sampled_from([-1, 2.5, True]))
    return config, "model.seq_len"
  if mutation == "train_int":
    name = draw(st.sampled_from(TRAIN_POSITIVE_INTS))
    train[name] = draw(NOT_A_POSITIVE_INT)
    return config, f"train.{name}"
  if mutation == "train_float":
    name = draw(st.sampled_from(TRAIN_NON_NEGATIVE_FLOATS))
    train[name] = draw(NOT_A_FINITE_NON_NEGATIVE)
    return config, f"train.{name}"
  if mutation == "warmup":
    train.warmup_steps = draw(st.one_of(st.integers(max_value=-1), st.just(0.5)))
    return config, "train.warmup_steps"
  if mutation == "seed":
    train.seed = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 31),
                                st.just("0")))
    return config, "train.seed"
  if mutation == "eval_batches":
    train.num_eval_batches = draw(st.one_of(st.integers(max_value=-1), st.just(1.5)))
    return config, "train.num_eval_batches"
  if mutation == "dtype":
    train.compute_dtype = draw(st.text(max_size=10).filter(
        lambda s: s not in ("float32", "bfloat16")))
    return config, "train.compute_dtype"
  if mutation == "dataset":
    data.dataset = draw(st.text(max_size=12).filter(lambda s: s not in TASKS))
    return config, "data.dataset"
  if mutation == "generate":
    name = draw(st.sampled_from([n for n, t in TASKS.items() if not t.generator]))
    data.update(dataset=name, generate=True)
    model.update(seq_len=0, num_segments=1)
    return config, "data.generate"
  if mutation == "sizes":
    data.generate_sizes = draw(st.one_of(
        st.lists(st.integers(1, 9), min_size=0, max_size=2).map(tuple),
        st.tuples(st.integers(max_value=0), st.integers(1, 9), st.integers(1, 9)),
        st.just("(1,2,3)")))
    return config, "data.generate_sizes"
  if mutation == "workers":
    name, bad = draw(st.sampled_from([("generate_workers", 0), ("num_workers", -1),
                                      ("generate_seed", -3), ("num_workers", 1.5)]))
    data[name] = bad
    return config, f"data.{name}"
  if mutation == "difficulty":
    data.pathfinder_difficulty = draw(st.text(max_size=8).filter(
        lambda s: s not in ("easy", "intermediate", "hard")))
    return config, "data.pathfinder_difficulty"
  # distributed: enabled with an explicit coordinator, one value wrong
  config.distributed.update(enabled=True, coordinator_address="127.0.0.1:1234",
                            num_processes=2, process_id=0)
  name, bad = draw(st.sampled_from([("coordinator_address", "localhost"),
                                    ("num_processes", 0), ("process_id", 2),
                                    ("process_id", -1)]))
  config.distributed[name] = bad
  return config, f"distributed.{name}"


@PROPERTY
@given(valid_configs())
def test_every_valid_config_builds_a_model(config):
  model_config = validate_config(config)
  model = build_model(model_config)
  shape = (2,) + ((2,) if model_config.dual_encoder else ()) + (model_config.seq_len,)
  tokens = jax.ShapeDtypeStruct(shape, jnp.int32)
  variables = jax.eval_shape(lambda t: model.init({"params": jax.random.key(0)}, t), tokens)
  logits = jax.eval_shape(
      lambda v, t: model.apply(v, t, train=True, rngs={"dropout": jax.random.key(1)}),
      variables, tokens)
  assert logits.shape == (2, model_config.num_classes)


@PROPERTY
@given(invalid_configs())
def test_every_invalid_config_is_rejected_naming_the_field(case):
  config, field = case
  with pytest.raises(ConfigError) as error:
    validate_config(config)
  message = str(error.value)
  assert "\n" not in message
  assert field in message, (field, message)


# Through the command line: overrides that parse as flags but hold an invalid value.
CLI_MISTAKES = st.sampled_from([
    ("model.num_segments", 3), ("model.num_heads", 5), ("model.emb_dim", 0),
    ("model.dropout_rate", 1.5), ("model.alpha", -1.0), ("model.attention", "flash"),
    ("model.pad_id", 99), ("model.seq_len", 1000), ("train.batch_size", -4),
    ("train.learning_rate", -0.1), ("train.warmup_steps", -1), ("train.seed", -1),
    ("train.compute_dtype", "float16"), ("data.dataset", "lisops"),
    ("data.num_workers", -1), ("data.pathfinder_difficulty", "extreme"),
])


@settings(max_examples=6, deadline=None, derandomize=True)
@given(CLI_MISTAKES)
def test_invalid_overrides_exit_2_with_one_error_line(tmp_path_factory, mistake):
  field, value = mistake
  workdir = tmp_path_factory.mktemp("work")
  code, stderr = run_main(workdir, f"--config.{field}={value}",
                          f"--config.data.data_dir={workdir}")
  assert code == 2, stderr
  lines = error_lines(stderr)
  assert len(lines) == 1 and field in lines[0], stderr
  assert "Traceback" not in stderr
  assert not list(workdir.iterdir()), "a rejected config must not leave files behind"
