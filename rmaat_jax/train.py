"""Training and evaluation: `train_and_evaluate(config, workdir)` (Flax-examples style).

- Data-parallel over all local devices with `jax.pmap(axis_name="batch")`; gradients are
  averaged with `lax.pmean`. The same code runs on 1 device, on N forced CPU devices and
  across hosts after `jax.distributed.initialize()` (main.py).
- optax AdamW with linear warmup and cosine decay, global-norm clipping; optional bf16
  compute (float32 master weights); the train state buffers are donated.
- Every random number is a function of (train.seed, step, device), and the data order a
  function of (train.seed, step) (grain), so a resumed run repeats an uninterrupted one.
- orbax: `workdir/checkpoints` (the latest few, with the grain iterator state and the open
  last logged loss) and `workdir/best` (the best validation accuracy). Test accuracy is taken
  from the best checkpoint, never from the last step.
"""


import json
import logging
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import flax
import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from clu import metrics
from flax.training import train_state
from jax import lax

from rmaat_jax import metric_logging
from rmaat_jax.data.pipeline import get_datasets
from rmaat_jax.models import build_model
from rmaat_jax.models.config import ConfigError, ModelConfig


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


_POSITIVE = ("num_steps", "batch_size", "eval_every", "checkpoint_every", "log_every",
             "keep_checkpoints")


def validate_train_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError naming the first invalid `train.*` field."""
  train = config.train
  for name in _POSITIVE:
    value = train.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"train.{name}={value!r}: must be a positive integer")
  if train.batch_size % num_devices:
    raise ConfigError(f"train.batch_size={train.batch_size} is not divisible by the "
                      f"{num_devices} devices; use a multiple of {num_devices}")
  for name in ("learning_rate", "weight_decay", "grad_clip"):
    if not train.get(name, 0.0) >= 0:
      raise ConfigError(f"train.{name}={train.get(name)!r}: must be >= 0")
  if not 0 <= train.warmup_steps <= train.num_steps:
    raise ConfigError(f"train.warmup_steps={train.warmup_steps}: must be in "
                      f"[0, train.num_steps={train.num_steps}]")
  if train.num_eval_batches < 0:
    raise ConfigError(f"train.num_eval_batches={train.num_eval_batches}: must be >= 0 "
                      "(0 = the whole split)")
  if train.compute_dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"train.compute_dtype={train.compute_dtype!r}: use 'float32' or "
                      "'bfloat16'")


def create_optimizer(train: ml_collections.ConfigDict):
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
      # decay_steps counts the warmup too; keep one cosine step when warmup fills the run.
      decay_steps=max(train.num_steps, train.warmup_steps + 1), end_value=0.0)
  transforms = [optax.adamw(schedule, weight_decay=train.weight_decay)]
  if train.grad_clip > 0:
    transforms.insert(0, optax.clip_by_global_norm(train.grad_clip))
  return optax.chain(*transforms), schedule


def _cast(tree, dtype):
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(model, schedule, compute_dtype):
  def train_step(state, batch, base_key):
    # One key per (step, device): a pure function of the state, so resuming replays it.
    key = jax.random.fold_in(jax.random.fold_in(base_key, state.step),
                             lax.axis_index("batch"))

    def loss_fn(params):
      logits = model.apply({"params": _cast(params, compute_dtype)}, batch["inputs"],
                           train=True, rngs={"dropout": key}).astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
      return loss.mean(), (loss, logits)

    (_, (loss, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, axis_name="batch")
    new_state = state.apply_gradients(grads=grads)
    step_metrics = TrainMetrics.gather_from_model_output(
        loss=loss, logits=logits, labels=batch["targets"])
    return new_state, step_metrics, schedule(state.step)

  return jax.pmap(train_step, axis_name="batch", donate_argnums=(0,))


def make_eval_step(model, compute_dtype):
  def eval_step(params, batch):
    logits = model.apply({"params": _cast(params, compute_dtype)}, batch["inputs"],
                         train=False).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return EvalMetrics.gather_from_model_output(
        loss=loss, logits=logits, labels=batch["targets"], mask=batch["weights"] > 0)

  return jax.pmap(eval_step, axis_name="batch")


def _shard(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  return {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}


def _padded_batches(loader, batch_size: int, limit: int) -> Iterator[dict[str, np.ndarray]]:
  """Eval batches padded to a fixed size; `weights` marks the real examples."""
  for i, batch in enumerate(loader):
    if limit and i >= limit:
      return
    n = batch["targets"].shape[0]
    pad = batch_size - n
    padded = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
              for k, v in batch.items()}
    padded["weights"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    yield padded


def evaluate(eval_step, params, loader, batch_size: int, limit: int,
             num_devices: int) -> dict[str, float]:
  total = None
  for batch in _padded_batches(loader, batch_size, limit):
    step_metrics = flax.jax_utils.unreplicate(eval_step(params, _shard(batch, num_devices)))
    total = step_metrics if total is None else total.merge(step_metrics)
  if total is None:
    raise ValueError("the evaluation split is empty")
  return {k: float(v) for k, v in total.compute().items()}


def _checkpoint_managers(workdir: str, keep: int):
  latest = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=("state", "data", "meta"))
  best = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "best"),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
      item_names=("state", "meta"))
  return latest, best


def _write_json(path: str, payload: dict[str, Any]) -> None:
  """Atomic: a reader never sees a half-written file."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def create_state(config, model, example_tokens, tx) -> train_state.TrainState:
  params = jax.jit(lambda key: model.init({"params": key}, example_tokens))(
      jax.random.key(config.train.seed))["params"]
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.model` on `config.data`, evaluates, writes workdir/results.json."""
  setup = _setup(config)
  model, datasets, state, schedule = setup.model, setup.datasets, setup.state, setup.schedule
  train_cfg, num_devices = config.train, jax.local_device_count()
  is_chief = jax.process_index() == 0
  logging.info("Data: %s; examples %s.", datasets.info.source, datasets.info.num_examples)
  process_batch = train_cfg.batch_size // jax.process_count()
  train_step = make_train_step(model, schedule, setup.compute_dtype)
  eval_step = make_eval_step(model, setup.compute_dtype)

  os.makedirs(workdir, exist_ok=True)
  latest, best = _checkpoint_managers(workdir, train_cfg.keep_checkpoints)
  train_iter = iter(datasets.train)
  meta = {"best_val_accuracy": None, "best_step": None, "last_window_loss": None}
  resumed_from = latest.latest_step()
  if resumed_from is not None:
    restored = latest.restore(resumed_from, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), data=grain.PyGrainCheckpointRestore(train_iter),
        meta=ocp.args.JsonRestore()))
    state, meta = restored.state, restored.meta
    logging.info("Resumed from step %d in %s.", resumed_from, workdir)

  writer, progress = metric_logging.create_writer_and_progress(
      workdir, train_cfg.num_steps, is_chief, every_steps=train_cfg.log_every)
  if resumed_from is None:
    writer.write_hparams({k: v for k, v in flat_config(config).items()})
  base_key = jax.random.key(train_cfg.seed + 1)
  window = None  # train metrics since the last log; closed at every checkpoint too
  last_window_loss = meta.get("last_window_loss")
  step = int(state.step)
  rstate = flax.jax_utils.replicate(state)
  del state

  def save_latest(step: int) -> None:
    meta["last_window_loss"] = last_window_loss
    latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(flax.jax_utils.unreplicate(rstate)),
        data=grain.PyGrainCheckpointSave(train_iter), meta=ocp.args.JsonSave(meta)))

  def validate(step: int) -> None:
    val = evaluate(eval_step, rstate.params, datasets.validation, process_batch,
                   train_cfg.num_eval_batches, num_devices)
    writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
    if meta["best_val_accuracy"] is None or val["accuracy"] > meta["best_val_accuracy"]:
      meta.update(best_val_accuracy=val["accuracy"], best_step=step)
      if best.latest_step() != step:  # a resumed run may reach a saved step again
        best.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flax.jax_utils.unreplicate(rstate)),
            meta=ocp.args.JsonSave({"val_accuracy": val["accuracy"], "step": step})))
        best.wait_until_finished()

  while step < train_cfg.num_steps:
    batch = _shard(next(train_iter), num_devices)
    rstate, step_metrics, lr = train_step(rstate, batch, flax.jax_utils.replicate(base_key))
    step += 1
    step_metrics = flax.jax_utils.unreplicate(step_metrics)
    window = step_metrics if window is None else window.merge(step_metrics)
    progress(step)
    checkpoint_now = step % train_cfg.checkpoint_every == 0 or step == train_cfg.num_steps
    # A window also closes at a checkpoint, so that a resumed run logs the same windows.
    if step % train_cfg.log_every == 0 or checkpoint_now:
      scalars = {f"train_{k}": v for k, v in window.compute().items()}
      last_window_loss = float(scalars["train_loss"])
      scalars["learning_rate"] = float(flax.jax_utils.unreplicate(lr))
      scalars.update(_peak_memory())
      writer.write_scalars(step, scalars)
      window = None
    if step % train_cfg.eval_every == 0 or step == train_cfg.num_steps:
      validate(step)
    if checkpoint_now:
      save_latest(step)
  latest.wait_until_finished()

  results = test_best(config, workdir, model, datasets, eval_step, rstate, best)
  results.update(steps=step, train_loss=last_window_loss,
                 resumed_from_step=resumed_from, dataset=datasets.info.dataset,
                 data_source=datasets.info.source)
  if is_chief:
    _write_json(os.path.join(workdir, "results.json"), results)
  writer.write_scalars(step, {"test_accuracy": results["test_accuracy"]})
  writer.flush()
  latest.close()
  best.close()
  return results


def test_best(config, workdir, model, datasets, eval_step, rstate, best) -> dict[str, Any]:
  """Restores the best-validation checkpoint and evaluates it on the test split."""
  best_step = best.latest_step()
  if best_step is None:
    raise FileNotFoundError(f"no best checkpoint in {workdir}/best: run training first")
  template = flax.jax_utils.unreplicate(rstate)
  restored = best.restore(best_step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
  params = flax.jax_utils.replicate(restored.state.params)
  process_batch = config.train.batch_size // jax.process_count()
  test = evaluate(eval_step, params, datasets.test, process_batch, 0,
                  jax.local_device_count())
  return {"best_step": int(best_step), "val_accuracy": restored.meta["val_accuracy"],
          "test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def _peak_memory() -> dict[str, float]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" not in stats:
    return {}
  return {"peak_memory_gib": stats["peak_bytes_in_use"] / 2 ** 30}


def flat_config(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(flat_config(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat


class _Setup(NamedTuple):
  model: Any
  datasets: Any
  state: train_state.TrainState
  schedule: Any
  compute_dtype: Any


def _setup(config: ml_collections.ConfigDict) -> _Setup:
  """Validates the config, then builds the model, the data and a fresh train state."""
  validate_train_config(config, jax.local_device_count() * jax.process_count())
  model_config = ModelConfig.from_config(config.model)
  model = build_model(model_config)
  datasets = get_datasets(config, process_index=jax.process_index(),
                          process_count=jax.process_count())
  tx, schedule = create_optimizer(config.train)
  example = np.zeros((1,) + ((2,) if model_config.dual_encoder else ())
                     + (model_config.seq_len,), np.int32)
  compute_dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
  return _Setup(model, datasets, create_state(config, model, example, tx), schedule,
                compute_dtype)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Eval-only mode: test accuracy of the best checkpoint in `workdir`."""
  setup = _setup(config)
  _, best = _checkpoint_managers(workdir, config.train.keep_checkpoints)
  results = test_best(config, workdir, setup.model, setup.datasets,
                      make_eval_step(setup.model, setup.compute_dtype),
                      flax.jax_utils.replicate(setup.state), best)
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "eval_results.json"), results)
  return results
