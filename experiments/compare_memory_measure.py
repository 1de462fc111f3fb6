"""One training step (forward + backward + AdamW update) of RMAAT in JAX or PyTorch: its
memory and median step time. Used by compare_memory.py; see there for the metrics.

Both frameworks train the same model (the task config with T segments), in float32, with
dropout on (train mode), AdamW (lr 1e-3, weight decay 1e-2, eps 1e-8), no gradient clipping,
on the same random tokens.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax: true peaks

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import configs  # noqa: E402
from experiments.compare_memory_report import TASKS  # noqa: E402
from experiments.torch_rmaat import build_torch_model  # noqa: E402
from experiments.torch_rmaat_memory import SavedTensorMeter, training_state_bytes  # noqa: E402
from rmaat_jax.data.tasks import model_config  # noqa: E402
from rmaat_jax.models import ModelConfig, build_model  # noqa: E402

LEARNING_RATE, WEIGHT_DECAY, EPS = 1e-3, 1e-2, 1e-8


# --toy: a model small enough to compile and step in a second (smoke runs, the GPU
# campaign's dry run); the segment loop, both frameworks and both modes are unchanged.
TOY = dict(emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32)
TOY_SEGMENT_LEN = 16


def task_config(task: str, num_segments: int, backprop: str, toy: bool = False) -> ModelConfig:
  """The task's model with T segments of the config's segment length (512 for both)."""
  model = model_config(configs.load(TASKS[task]))  # with the dataset's vocabulary, length
  segment_len = model["seq_len"] // model["num_segments"]
  if toy:
    model.update(TOY)
    segment_len = TOY_SEGMENT_LEN
  model.update(num_segments=num_segments, seq_len=segment_len * num_segments,
               backprop=backprop)
  return ModelConfig.from_config(model)


def example_batch(cfg: ModelConfig, batch: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  shape = (batch, 2, cfg.seq_len) if cfg.dual_encoder else (batch, cfg.seq_len)
  tokens = rng.integers(1, cfg.vocab_size, shape).astype(np.int32)
  labels = (np.arange(batch) % cfg.num_classes).astype(np.int32)
  return tokens, labels


def _median_time(step: Callable[[], None], repeats: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


# ----------------------------------------------------------------------------- JAX
def measure_jax(cfg: ModelConfig, batch: int, repeats: int) -> dict:
  """Compiled memory analysis (any backend) and, on GPU, the runtime peak."""
  model = build_model(cfg)
  tokens, labels = map(jnp.asarray, example_batch(cfg, batch))
  tx = optax.adamw(LEARNING_RATE, eps=EPS, weight_decay=WEIGHT_DECAY)

  # Tokens are jit arguments (as in the trainer), not closed-over constants.
  def train_step(params, opt_state, key, tokens, labels):
    def loss_fn(p):
      logits = model.apply({"params": p}, tokens, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  init = jax.jit(lambda k, x: model.init({"params": k}, x)["params"])
  params = init(jax.random.key(0), tokens)
  opt_state = tx.init(params)
  key = jax.random.key(1)
  step = jax.jit(train_step, donate_argnums=(0, 1))
  start = time.perf_counter()
  compiled = step.lower(params, opt_state, key, tokens, labels).compile()
  compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  result = {
      "xla_temp": int(stats.temp_size_in_bytes),
      "xla_arguments": int(stats.argument_size_in_bytes),
      "xla_outputs": int(stats.output_size_in_bytes),
      "xla_alias": int(stats.alias_size_in_bytes),
      "compile_s": compile_s,
  }
  result["xla_total"] = (result["xla_arguments"] + result["xla_outputs"]
                         + result["xla_temp"] - result["xla_alias"])
  state = {"params": params, "opt": opt_state}

  def run() -> None:
    state["params"], state["opt"], loss = compiled(state["params"], state["opt"], key,
                                                   tokens, labels)
    jax.block_until_ready(loss)

  run()  # warm-up
  result["step_s"], result["step_times"] = _median_time(run, repeats)
  device = jax.local_devices()[0]
  if device.platform == "gpu":
    result["runtime_peak"] = int(device.memory_stats()["peak_bytes_in_use"])
  return result


# ----------------------------------------------------------------------------- PyTorch
def measure_torch(cfg: ModelConfig, batch: int, repeats: int, device: str) -> dict:
  """Saved-activation peak + parameter/grad/AdamW bytes; on CUDA also the allocator peak."""
  torch.manual_seed(0)
  # XLA's CPU backend flushes denormals to zero; torch does not by default, and a few
  # AdamW steps on one repeated batch produce denormals that made torch's CPU steps up to
  # 30x slower. Flush them here too, so that the timings compare the models.
  torch.set_flush_denormal(True)
  model = build_torch_model(cfg, device=device).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, eps=EPS,
                                weight_decay=WEIGHT_DECAY)
  tokens, labels = (torch.as_tensor(a, dtype=torch.long, device=device)
                    for a in example_batch(cfg, batch))
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

  def run() -> None:
    optimizer.zero_grad(set_to_none=True)
    model.loss_and_backward(tokens, labels)
    optimizer.step()
    sync()

  # The first (metered) step doubles as the warm-up: the saved-activation peak does not
  # depend on the AdamW state, which exists once it has run, before the bytes are counted.
  if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
  with SavedTensorMeter(model.parameters()) as meter:
    run()
  if device.startswith("cuda"):  # the allocator peak of a step that has AdamW state
    torch.cuda.reset_peak_memory_stats()
    run()
  result = {"torch_saved_peak": meter.peak_bytes}
  if device.startswith("cuda"):
    result["runtime_peak"] = int(torch.cuda.max_memory_allocated())
  # Grads are freed (set_to_none) at each step start, but present at the optimiser step.
  result.update({f"torch_{k}": v for k, v in training_state_bytes(model, optimizer).items()})
  result["torch_total"] = (result["torch_saved_peak"] + result["torch_params"]
                           + result["torch_grads"] + result["torch_optimizer"])
  result["step_s"], result["step_times"] = _median_time(run, repeats)
  return result


def measure(framework: str, task: str, mode: str, num_segments: int, batch: int,
            repeats: int, device: str, torch_threads: int = 0, toy: bool = False) -> dict:
  """One row of the comparison; `device` is "cpu" or "gpu"; torch_threads 0 = default."""
  cfg = task_config(task, num_segments, mode, toy)
  if torch_threads:
    torch.set_num_threads(torch_threads)
  if framework == "jax":
    result = measure_jax(cfg, batch, repeats)
  else:
    result = measure_torch(cfg, batch, repeats, "cuda" if device == "gpu" else "cpu")
  if device == "gpu":
    memory, metric = result["runtime_peak"], "runtime peak allocated"
  elif framework == "jax":
    memory, metric = result["xla_total"], "XLA compiled: arguments+outputs+temp-alias"
  else:
    memory, metric = result["torch_total"], "saved-activation peak+params+grads+AdamW"
  activations = result["xla_temp"] if framework == "jax" else result["torch_saved_peak"]
  return {"framework": framework, "task": task, "mode": mode, "segments": num_segments,
          "seq_len": cfg.seq_len, "batch": batch, "repeats": repeats, "memory_bytes": int(memory),
          "memory_metric": metric, "activation_bytes": int(activations),
          "torch_threads": torch.get_num_threads() if framework == "torch" else None,
          **result}
