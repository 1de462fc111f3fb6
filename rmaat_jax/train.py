"""Training and evaluation: `train_and_evaluate(config, workdir)` (Flax-examples style).

- Data-parallel over all local devices with `jax.pmap(axis_name="batch")`; gradients are
  averaged with `lax.pmean`. The same code runs on 1 device, on N forced CPU devices and
  across hosts after `jax.distributed.initialize()` (main.py).
- optax AdamW with linear warmup and cosine decay, global-norm clipping; optional bf16
  compute (float32 master weights); the train state buffers are donated.
- Every random number is a function of (train.seed, step, device), and the data order a
  function of (train.seed, step) (grain), so a resumed run repeats an uninterrupted one.
- Checkpoints (checkpointing.py): `workdir/checkpoints` (the latest few, with the grain
  iterator state, the open logging window and the last logged loss) and `workdir/best` (the
  best validation accuracy). Test accuracy is taken from the best checkpoint, never from the
  last step. SIGTERM saves the current step and exits with status 143; a resumed run -
  after a kill at any moment, a corrupt latest checkpoint or a preemption - ends with the
  same results as an uninterrupted one.
- A NaN or Inf training loss, parameters or validation loss stop training
  (TrainingDivergedError, exit 2) before anything non-finite is saved or chosen as best.
- The train step is compiled ahead of time and its memory checked against the device's
  (memory.py): a step that cannot fit stops with advice instead of failing mid-run.
"""


import functools
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax import lax
from jax.experimental import multihost_utils

from rmaat_jax import config_checks, memory, metric_logging, workdir_config
from rmaat_jax.checkpointing import Checkpoints, Preempted, PreemptionWatcher, tree_is_finite
from rmaat_jax.data import loaders
from rmaat_jax.data.pipeline import get_datasets
from rmaat_jax.errors import UserError
from rmaat_jax.models import build_model
from rmaat_jax.models.config import ModelConfig
from rmaat_jax.train_metrics import Metrics, TrainWindow

# Parameters that weight decay shrinks: weight matrices and embeddings. Not biases, LayerNorm
# scales, the learned initial memory or the positional projections E (decaying E drives R
# toward 0 and erodes the astrocytic positional term).
_DECAYED_LEAVES = ("kernel", "embedding", "position_embedding")


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves AdamW's weight decay applies to (see _DECAYED_LEAVES)."""
  def decayed(path, _):
    return getattr(path[-1], "key", None) in _DECAYED_LEAVES
  return jax.tree_util.tree_map_with_path(decayed, params)


def create_optimizer(train: ml_collections.ConfigDict):
  warmup, warning = config_checks.warmup_steps(train)
  if warning:
    logging.warning(warning)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate, warmup_steps=warmup,
      # decay_steps counts the warmup too; keep one cosine step when warmup fills the run.
      decay_steps=max(train.num_steps, warmup + 1), end_value=0.0)
  transforms = [optax.adamw(schedule, weight_decay=train.weight_decay,
                            mask=weight_decay_mask)]
  if train.grad_clip > 0:
    transforms.insert(0, optax.clip_by_global_norm(train.grad_clip))
  return optax.chain(*transforms), schedule


def make_train_step(model, schedule):
  def train_step(state, batch, base_key):
    # One key per (step, device): a pure function of the state, so resuming replays it.
    key = jax.random.fold_in(jax.random.fold_in(base_key, state.step),
                             lax.axis_index("batch"))

    def loss_fn(params):
      logits = model.apply({"params": params}, batch["inputs"], train=True,
                           rngs={"dropout": key})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
      return loss.mean(), (loss, logits)

    (_, (loss, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, axis_name="batch")
    new_state = state.apply_gradients(grads=grads)
    step_metrics = Metrics.gather_from_model_output(
        loss=loss, logits=logits, labels=batch["targets"])
    return new_state, step_metrics, schedule(state.step)

  return jax.pmap(train_step, axis_name="batch", donate_argnums=(0,))


def make_eval_step(model):
  def eval_step(params, batch):
    logits = model.apply({"params": params}, batch["inputs"], train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    # Each device's own sums, merged on the host (evaluate): no collective in this step.
    return Metrics.single_from_model_output(
        loss=loss, logits=logits, labels=batch["targets"], mask=batch["weights"] > 0)

  return jax.pmap(eval_step, axis_name="batch")


def _shard(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  return {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}


def _padded_batches(loader, batch_size: int, limit: int) -> Iterator[dict[str, np.ndarray]]:
  """Eval batches padded to a fixed size; `weights` marks the real examples."""
  iterator = iter(loader)
  try:
    for i, batch in enumerate(iterator):
      if limit and i >= limit:
        return
      n = batch["targets"].shape[0]
      pad = batch_size - n
      padded = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                for k, v in batch.items()}
      padded["weights"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
      yield padded
  finally:
    loaders.close(iterator)  # a pass cut short stops its workers now, not at exit


def _merge_leading(stacked: Metrics) -> Metrics:
  """Merges metrics stacked along a leading (device or process) axis."""
  parts = [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
           for i in range(len(jax.tree_util.tree_leaves(stacked)[0]))]
  return functools.reduce(lambda a, b: a.merge(b), parts)


def evaluate(eval_step, params, loader, batch_size: int, limit: int,
             num_devices: int) -> dict[str, float]:
  """Metrics over `loader` (at most `limit` batches; 0: all), summed over all processes.

  One evaluation step at a time, with no collective inside: on XLA's CPU runtime the devices
  share a thread pool, and many independent multi-device steps in flight whose collectives
  wait for each other could take every thread and abort after 40 s ("Termination timeout
  for all gather") on a busy machine. Processes combine their sums once, at the end.
  """
  total = None
  for batch in _padded_batches(loader, batch_size, limit):
    per_device = jax.device_get(eval_step(params, _shard(batch, num_devices)))  # waits
    step_metrics = _merge_leading(per_device)
    total = step_metrics if total is None else total.merge(step_metrics)
  if total is None:
    raise ValueError("the evaluation split is empty")
  if jax.process_count() > 1:
    total = _merge_leading(multihost_utils.process_allgather(total))
  return {k: float(v) for k, v in total.compute().items()}


def _write_json(path: str, payload: dict[str, Any]) -> None:
  """Atomic: a reader never sees a half-written file."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def host_state(rstate: train_state.TrainState) -> train_state.TrainState:
  """One host-memory (numpy) copy of a replicated state: what checkpoints store. Every process
  holds the same values, and orbax writes numpy leaves once, from process 0; device arrays
  local to one process cannot be saved in a multi-process run."""
  return jax.device_get(flax.jax_utils.unreplicate(rstate))


def create_state(config, model, example_tokens, tx) -> train_state.TrainState:
  params = jax.jit(lambda key: model.init({"params": key}, example_tokens))(
      jax.random.key(config.train.seed))["params"]
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


class TrainingDivergedError(UserError):
  """The training loss or the parameters became NaN or Inf (main.py: `error:`, exit 2)."""


def _diverged(what: str, step: int, ckpt: Checkpoints, train_cfg) -> TrainingDivergedError:
  last = ckpt.latest.latest_step()  # every saved step passed the checks below
  where = (f"the last good checkpoint is step {last} in {ckpt.latest.directory}"
           if last is not None else "no checkpoint was saved before it")
  hints = ["lower train.learning_rate"]
  if train_cfg.grad_clip <= 0:
    hints.append("set train.grad_clip (e.g. 1.0)")
  if train_cfg.compute_dtype != "float32":
    hints.append("use train.compute_dtype=float32")
  hint = hints[0] if len(hints) == 1 else ", ".join(hints[:-1]) + " or " + hints[-1]
  return TrainingDivergedError(f"{what} at step {step}; {where}; {hint}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.model` on `config.data`, evaluates, writes workdir/results.json.

  `config` must have passed config_checks.validate_config (and check_devices), as main.py
  does; this function does not check it again.
  """
  # Before data, compile or restore: checkpoints of another model stop the run here.
  workdir_config.check_workdir(config, workdir)
  setup = _setup(config)
  model, datasets, state, schedule = setup.model, setup.datasets, setup.state, setup.schedule
  train_cfg, num_devices = config.train, jax.local_device_count()
  is_chief = jax.process_index() == 0
  logging.info("Data: %s; examples %s.", datasets.info.source, datasets.info.num_examples)
  process_batch = train_cfg.batch_size // jax.process_count()
  train_step = make_train_step(model, schedule)
  eval_step = make_eval_step(model)

  os.makedirs(workdir, exist_ok=True)
  if is_chief:
    workdir_config.record_config(config, workdir)
  ckpt = Checkpoints(workdir, train_cfg.keep_checkpoints, train_cfg.checkpoint_every,
                     train_cfg.num_steps)
  try:
    train_iter = iter(datasets.train)
    resumed_from, state, meta = ckpt.restore_latest(jax.device_get(state), train_iter)
    meta = meta or {"best_val_accuracy": None, "best_step": None, "last_window_loss": None}
    if resumed_from is not None:
      logging.info("Resumed from step %d in %s.", resumed_from, workdir)
    if not ckpt.check_best(state):  # its step is past: the next validations choose again
      meta.update(best_val_accuracy=None, best_step=None)

    writer, progress = metric_logging.create_writer_and_progress(
        workdir, train_cfg.num_steps, is_chief, every_steps=train_cfg.log_every)
    if resumed_from is None:
      writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in workdir_config.flat_config(config).items()})
    rbase_key = flax.jax_utils.replicate(jax.random.key(train_cfg.seed + 1))
    window = TrainWindow(meta.get("open_window"),
                         lambda what, step: _diverged(what, step, ckpt, train_cfg))
    step = int(state.step)
    rstate = flax.jax_utils.replicate(state)
    del state
    train_step = compile_train_step(train_step, rstate, rbase_key, config, datasets.info)

    def validate(step: int) -> None:
      val = evaluate(eval_step, rstate.params, datasets.validation, process_batch,
                     train_cfg.num_eval_batches, num_devices)
      writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
      if not np.isfinite(val["loss"]):  # NaN logits: finite parameters, but broken ones
        raise _diverged(f"validation loss is {val['loss']}", step, ckpt, train_cfg)
      if meta["best_val_accuracy"] is None or val["accuracy"] > meta["best_val_accuracy"]:
        meta.update(best_val_accuracy=val["accuracy"], best_step=step)
        ckpt.save_best(step, host_state(rstate),
                       {"val_accuracy": val["accuracy"], "step": step})
        logging.info("Best validation accuracy so far (%.4f): step %d saved to %s.",
                     val["accuracy"], step, ckpt.best.directory)

    with PreemptionWatcher(ckpt.latest) as preemption, memory.advise_on_oom(
        config.model.backprop):
      while step < train_cfg.num_steps:
        batch = _shard(next(train_iter), num_devices)
        rstate, step_metrics, lr = train_step(rstate, batch, rbase_key)
        step += 1
        window.add(step, flax.jax_utils.unreplicate(step_metrics))
        progress(step)
        preempted = preemption.reached(step)
        save = preempted or ckpt.should_save(step)
        log = step % train_cfg.log_every == 0 or step == train_cfg.num_steps
        validate_now = step % train_cfg.eval_every == 0 or step == train_cfg.num_steps
        if save or validate_now:  # nothing non-finite is saved or chosen as best
          window.check_loss()
          if not tree_is_finite(flax.jax_utils.unreplicate(rstate.params)):
            raise _diverged("the parameters became NaN or Inf", step, ckpt, train_cfg)
        if log:
          scalars = window.pop()
          meta["last_window_loss"] = scalars["train_loss"]
          scalars["learning_rate"] = float(flax.jax_utils.unreplicate(lr))
          writer.write_scalars(step, {**scalars, **memory.peak_memory()})
        if validate_now:
          validate(step)
        if save:
          meta["open_window"] = window.to_json()
          ckpt.save_latest(step, host_state(rstate), train_iter, meta, force=preempted)
          logging.info("Checkpoint of step %d saving to %s.", step, ckpt.latest.directory)
        if preempted:
          ckpt.latest.wait_until_finished()
          writer.flush()
          logging.warning("preempted at step %d; checkpoint saved in %s; rerun the same "
                          "command to resume", step, ckpt.latest.directory)
          raise Preempted(step)
    ckpt.latest.wait_until_finished()

    results = evaluate_best_checkpoint(config, datasets, eval_step, host_state(rstate), ckpt)
  finally:
    ckpt.close()  # also on errors: a save in flight completes
    if "train_iter" in locals():
      train_iter.close()  # its worker processes and their prefetched batches
  results.update(steps=step, train_loss=meta["last_window_loss"],
                 resumed_from_step=resumed_from, dataset=datasets.info.dataset,
                 data_source=datasets.info.source)
  if is_chief:
    _write_json(os.path.join(workdir, "results.json"), results)
  writer.write_scalars(step, {"test_accuracy": results["test_accuracy"]})
  writer.flush()
  return results


def compile_train_step(train_step, rstate, rbase_key, config: ml_collections.ConfigDict,
                       info) -> Any:
  """The pmapped step compiled ahead of time, after checking that it fits in memory
  (memory.check_fits: OutOfMemoryError suggesting backprop="amrb" if it does not)."""
  num_devices = jax.local_device_count()
  per_device = config.train.batch_size // jax.process_count() // num_devices
  shape = (num_devices, per_device) + ((2,) if info.dual_encoder else ()) + (info.seq_len,)
  # Concrete (zero) arrays: lowering pmap across processes does not take abstract ones.
  batch = {"inputs": np.zeros(shape, np.int32), "targets": np.zeros(shape[:2], np.int32)}
  compiled = train_step.lower(rstate, batch, rbase_key).compile()
  need = memory.check_fits(compiled, jax.local_devices()[0], config.model.backprop,
                                 config.train.memory_limit_gib)
  if need is not None:
    logging.info("Memory check: one train step needs %.1f MiB per device.", need / 2 ** 20)
  # Across processes the compiled step takes global arrays, the loop passes each process's
  # own: there the pmapped function is called (and compiles once more on its first call).
  return compiled if jax.process_count() == 1 else train_step


def evaluate_best_checkpoint(config, datasets, eval_step, template: train_state.TrainState,
                             ckpt: Checkpoints) -> dict[str, Any]:
  """Restores the best-validation checkpoint (into a host-memory `template` state) and
  evaluates it on the test split."""
  best_step, state, best_meta = ckpt.restore_best(template)
  params = flax.jax_utils.replicate(state.params)
  process_batch = config.train.batch_size // jax.process_count()
  test = evaluate(eval_step, params, datasets.test, process_batch, 0,
                  jax.local_device_count())
  return {"best_step": int(best_step), "val_accuracy": best_meta["val_accuracy"],
          "test_accuracy": test["accuracy"], "test_loss": test["loss"]}


class _Setup(NamedTuple):
  model: Any
  datasets: Any
  state: train_state.TrainState
  schedule: Any


def _setup(config: ml_collections.ConfigDict) -> _Setup:
  """The data first (it sets the model's vocabulary, classes, padding and length), then the
  model and a fresh train state."""
  barrier = None
  if jax.process_count() > 1:  # process 0 prepares the data first (a shared data_dir)
    barrier = lambda: multihost_utils.sync_global_devices("rmaat_jax: data prepared")
  datasets = get_datasets(config, process_index=jax.process_index(),
                          process_count=jax.process_count(), barrier=barrier)
  model_config = ModelConfig.from_config({**dict(config.model.items()),
                                         **datasets.info.model_facts()})
  # bf16 compute happens inside each segment step; parameters stay float32 (models/encoder.py).
  compute_dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
  model = build_model(model_config, compute_dtype)
  tx, schedule = create_optimizer(config.train)
  example = np.zeros((1,) + ((2,) if model_config.dual_encoder else ())
                     + (model_config.seq_len,), np.int32)
  return _Setup(model, datasets, create_state(config, model, example, tx), schedule)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str,
                     other_length: bool = False) -> dict[str, Any]:
  """Eval-only mode: test accuracy of the best checkpoint in `workdir`.

  Writes workdir/eval_results.json. `other_length`: the config may read more or fewer
  segments (of the trained segment length) than the checkpoints were trained on
  (workdir_config.LENGTH_FIELDS); the results then go to eval_results_T<segments>.json.
  """
  workdir_config.check_workdir(config, workdir, eval_only=True, other_length=other_length)
  setup = _setup(config)
  ckpt = Checkpoints(workdir, read_only=True)
  try:
    results = evaluate_best_checkpoint(config, setup.datasets, make_eval_step(setup.model),
                                       jax.device_get(setup.state), ckpt)
  finally:
    ckpt.close()
  results.update(num_segments=int(config.model.num_segments),
                 seq_len=int(setup.datasets.info.seq_len),
                 num_test_examples=int(setup.datasets.info.num_examples["test"]))
  name = (f"eval_results_T{config.model.num_segments}.json" if other_length
          else "eval_results.json")
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, name), results)
  return results
