"""One training step (forward + backward + AdamW update) of RMAAT in JAX or PyTorch: its
memory and median step time. Used by compare_memory.py; see there for the metrics (METRICS).

Both frameworks train the same model (the task config with T segments), in float32, with
dropout on (train mode), AdamW (lr 1e-3, weight decay 1e-2, eps 1e-8), no gradient clipping,
on the same random tokens.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax: true peaks

import dataclasses  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from experiments.benchmarks.compare_memory_report import METRICS, TASKS  # noqa: E402
from experiments.torch_port.memory_meter import (  # noqa: E402
  SavedTensorMeter,
  optimizer_tensors,
  storage_bytes,
  tensor_bytes,
  training_state_bytes,
  training_step_live_bytes,
)
from experiments.torch_port.model import build_torch_model  # noqa: E402
from rmaat_jax import configs  # noqa: E402
from rmaat_jax.data.tasks import model_config  # noqa: E402
from rmaat_jax.models import ModelConfig, build_model  # noqa: E402

LEARNING_RATE, WEIGHT_DECAY, EPS = 1e-3, 1e-2, 1e-8

# JAX's dropout bits for the compiled memory: rbg, as on a GPU (docs/method.md 5.1; CPU
# compilation stands in for a GPU's, as in segment_memory.py and paper_table.py). The timed
# step uses "auto" (threefry on CPU, rbg on GPU/TPU: what a user of that backend runs).
MEMORY_DROPOUT_RNG, TIMING_DROPOUT_RNG = "rbg", "auto"


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
def _compile_jax_step(cfg: ModelConfig, batch: int) -> tuple[Any, dict, float]:
  """The jitted, compiled training step of `cfg`, its arguments and the compile seconds."""
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
  args = {"params": params, "opt": tx.init(params), "key": jax.random.key(1),
          "tokens": tokens, "labels": labels}
  step = jax.jit(train_step, donate_argnums=(0, 1))
  start = time.perf_counter()
  compiled = step.lower(args["params"], args["opt"], args["key"], tokens, labels).compile()
  return compiled, args, time.perf_counter() - start


def _runner(compiled: Any, args: dict) -> Callable[[], None]:
  """One call = one training step; the donated params and AdamW state are carried."""
  key, tokens, labels = args["key"], args["tokens"], args["labels"]

  def run() -> None:
    args["params"], args["opt"], loss = compiled(args["params"], args["opt"], key, tokens,
                                                 labels)
    jax.block_until_ready(loss)

  return run


def jax_training_step(cfg: ModelConfig, batch: int) -> tuple[Callable[[], None], float]:
  """A callable running one compiled JAX training step of `cfg`, and the compile seconds."""
  compiled, args, compile_s = _compile_jax_step(cfg, batch)
  return _runner(compiled, args), compile_s


def _xla_memory(compiled: Any) -> dict[str, int]:
  stats = compiled.memory_analysis()
  result = {"xla_temp": int(stats.temp_size_in_bytes),
            "xla_arguments": int(stats.argument_size_in_bytes),
            "xla_outputs": int(stats.output_size_in_bytes),
            "xla_alias": int(stats.alias_size_in_bytes)}
  result["xla_total"] = (result["xla_arguments"] + result["xla_outputs"] + result["xla_temp"]
                         - result["xla_alias"])
  return result


def measure_jax(cfg: ModelConfig, batch: int, repeats: int) -> dict:
  """Compiled memory analysis (rbg dropout), step time ("auto"), on GPU the runtime peak.

  On CPU "auto" is threefry, so the step is compiled twice: the memory analysis of the rbg
  step is the memory figure (a GPU's step), the threefry step is timed, and its analysis is
  kept as xla_total_timed_step. On a GPU both are rbg: one compilation.
  """
  memory_cfg = dataclasses.replace(cfg, dropout_rng=MEMORY_DROPOUT_RNG)
  timing_cfg = dataclasses.replace(cfg, dropout_rng=TIMING_DROPOUT_RNG)
  cpu = jax.default_backend() == "cpu"
  compiled, args, compile_s = _compile_jax_step(timing_cfg, batch)
  timed_memory = _xla_memory(compiled)
  result = {"memory_dropout_rng": MEMORY_DROPOUT_RNG,
            "timing_dropout_rng": "threefry" if cpu else "rbg", "compile_s": compile_s,
            "xla_total_timed_step": timed_memory["xla_total"]}
  if cpu:
    memory_compiled, _, memory_compile_s = _compile_jax_step(memory_cfg, batch)
    result.update(_xla_memory(memory_compiled), memory_compile_s=memory_compile_s)
    del memory_compiled
  else:
    result.update(timed_memory)
  run = _runner(compiled, args)
  run()  # warm-up
  result["step_s"], result["step_times"] = _median_time(run, repeats)
  device = jax.local_devices()[0]
  if device.platform == "gpu":
    result["runtime_peak"] = int(device.memory_stats()["peak_bytes_in_use"])
  # What lives across steps: parameters, AdamW state, key and batch (the step's arguments).
  result["state_bytes"] = result["xla_arguments"]
  return result


# ----------------------------------------------------------------------------- PyTorch
@dataclasses.dataclass(frozen=True)
class TorchStep:
  """The port's training step of a config: `run()` is one step (forward, backward, AdamW)."""

  run: Callable[[], None]
  model: torch.nn.Module
  optimizer: torch.optim.Optimizer
  tokens: torch.Tensor
  labels: torch.Tensor


def torch_training_step(cfg: ModelConfig, batch: int, device: str = "cpu") -> TorchStep:
  """The port's model of `cfg` in train mode (dropout on), AdamW, the same batch as JAX."""
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

  return TorchStep(run, model, optimizer, tokens, labels)


def measure_torch(cfg: ModelConfig, batch: int, repeats: int, device: str) -> dict:
  """Peak live allocator bytes of a step (profiler on CPU, CUDA allocator peak on GPU)."""
  step = torch_training_step(cfg, batch, device)
  run, model, optimizer, tokens, labels = (step.run, step.model, step.optimizer, step.tokens,
                                           step.labels)

  # The warm-up step (it creates the AdamW state) also meters what autograd saves; the
  # saved-activation peak does not depend on the AdamW state.
  meter = SavedTensorMeter(model.parameters())

  def warmup() -> None:
    with meter:
      run()

  result = {}
  if device.startswith("cuda"):
    warmup()
    torch.cuda.reset_peak_memory_stats()  # the peak of a step that has AdamW state
    run()
    result["runtime_peak"] = int(torch.cuda.max_memory_allocated())
  else:
    live = training_step_live_bytes(model, optimizer, run, [tokens, labels], device, warmup)
    result.update({f"torch_live_{k}": v for k, v in live.items()})
  result["torch_saved_peak"] = meter.peak_bytes
  result.update({f"torch_{k}": v for k, v in training_state_bytes(model, optimizer).items()})
  result["state_bytes"] = (storage_bytes([*model.parameters(), *model.buffers(), tokens, labels])
                           + tensor_bytes(optimizer_tensors(optimizer)))
  result["step_s"], result["step_times"] = _median_time(run, repeats)
  return result


def measure(framework: str, task: str, mode: str, num_segments: int, batch: int,
            repeats: int, device: str, torch_threads: int = 0, toy: bool = False) -> dict:
  """One row of the comparison; `device` is "cpu" or "gpu"; torch_threads 0 = default.

  memory_bytes: the step's peak live bytes by METRICS[device, framework]; transient_bytes:
  that minus state_bytes (parameters, optimizer state and batch, alive between steps).
  """
  cfg = task_config(task, num_segments, mode, toy)
  if torch_threads:
    torch.set_num_threads(torch_threads)
  if framework == "jax":
    result = measure_jax(cfg, batch, repeats)
  else:
    result = measure_torch(cfg, batch, repeats, "cuda" if device == "gpu" else "cpu")
  if device == "gpu":
    memory = result["runtime_peak"]
  else:
    memory = result["xla_total"] if framework == "jax" else result["torch_live_peak"]
  return {"framework": framework, "task": task, "mode": mode, "segments": num_segments,
          "seq_len": cfg.seq_len, "batch": batch, "repeats": repeats, "memory_bytes": int(memory),
          "memory_metric": METRICS[device, framework],
          "transient_bytes": int(memory) - result["state_bytes"],
          "torch_threads": torch.get_num_threads() if framework == "torch" else None,
          **result}
