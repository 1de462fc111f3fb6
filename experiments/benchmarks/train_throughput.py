"""Training-step throughput of every task config (the trainer's own pmapped step).

    python -m experiments.benchmarks.train_throughput [--batch 4] [--steps 3]
        [--configs lra_listops ...] [--preset cpu] [--dropout_rng auto|rbg|threefry]
        [--out_dir experiments/results] [--tag gpu]

Each config's model is trained for `--steps` timed steps (median, after one warm-up step)
on random tokens of the task's shape, with `--batch` examples per step (the task configs'
batches of 32-512 are too slow for a 2-core CPU; on a GPU pass --batch 0 to use them).
The input pipeline is excluded (see data_throughput.py). Writes
<out_dir>/train_throughput[_<tag>].{json,md}.
"""

import argparse
import pathlib
import statistics
import time

import flax
import jax
import numpy as np

from experiments.results_store import (
  RESULTS_DIR,
  jax_machine,
  key_of,
  merge_rows,
  provenance,
  provenance_line,
)
from rmaat_jax import configs, train
from rmaat_jax.config_checks import validate_config
from rmaat_jax.models import build_model

CONFIGS = ("lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder")


def measure(name: str, batch: int, steps: int, preset: str = "",
            dropout_rng: str = "") -> dict:
  config = configs.load(name, preset)
  if dropout_rng:
    config.model.dropout_rng = dropout_rng
  batch = batch or config.train.batch_size
  model_cfg = validate_config(config)  # with the dataset's vocabulary, classes, length
  shape = (batch, 2, model_cfg.seq_len) if model_cfg.dual_encoder else (batch, model_cfg.seq_len)
  rng = np.random.default_rng(0)
  inputs = rng.integers(1, model_cfg.vocab_size, shape).astype(np.int32)
  targets = rng.integers(0, model_cfg.num_classes, (batch,)).astype(np.int32)
  devices = jax.local_device_count()
  model = build_model(model_cfg)
  tx, schedule = train.create_optimizer(config.train)
  state = train.create_state(config, model, inputs[:1], tx)
  step_fn = train.make_train_step(model, schedule)
  rstate = flax.jax_utils.replicate(state)
  key = flax.jax_utils.replicate(jax.random.key(0))
  sharded = train._shard({"inputs": inputs, "targets": targets}, devices)  # noqa: SLF001
  start = time.perf_counter()
  rstate, _, _ = step_fn(rstate, sharded, key)
  jax.block_until_ready(rstate.params)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    rstate, _, _ = step_fn(rstate, sharded, key)
    jax.block_until_ready(rstate.params)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  tokens = batch * model_cfg.seq_len * (2 if model_cfg.dual_encoder else 1)
  params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return {"config": name, "batch": batch, "params": int(params), "step_s": step_s,
          "examples_per_s": batch / step_s, "tokens_per_s": tokens / step_s,
          "first_step_s": compile_s, "backprop": model_cfg.backprop,
          "dropout_rng": model_cfg.dropout_rng}


ROW_META = ("date", "machine", "commit", "command", "platform", "device", "preset")
ROW_KEY = key_of(("config", "preset", "batch", "dropout_rng", "backprop", "platform",
                  "device"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4, help="0: the config's batch")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
  parser.add_argument("--preset", default="", help="config preset, e.g. cpu or rmt,cpu")
  parser.add_argument("--dropout_rng", default="", choices=("", "auto", "rbg", "threefry"),
                      help="override model.dropout_rng (empty: the config's)")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--tag", default="", help="file name suffix, e.g. gpu")
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: JAX's accelerator, "
                      "else the CPU and its cores)")
  args = parser.parse_args()
  stamp = provenance(args.machine or jax_machine(),
                     module=__spec__.name)
  rows = []
  for name in args.configs:
    rows.append(measure(name, args.batch, args.steps, args.preset, args.dropout_rng))
    print(rows[-1], flush=True)
  device = jax.devices()[0]
  lines = [f"device: {device.platform} ({device.device_kind}) x {jax.local_device_count()}",
           "", "| config | params | batch | step (s) | examples/s | tokens/s |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r['config']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['step_s']:.3f} "
            f"| {r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} |" for r in rows]
  table = "\n".join(lines)
  print(table)
  out = args.out_dir
  out.mkdir(parents=True, exist_ok=True)
  meta = {**stamp, "platform": device.platform, "device": device.device_kind,
          "jax": jax.__version__, "preset": args.preset,
          "dropout_rng": args.dropout_rng or "config"}
  stem = "train_throughput" + (f"_{args.tag}" if args.tag else "")
  # Merged by what was measured: another preset, batch or dropout setting adds rows, a
  # rerun of the same measurement replaces its own (results_store.py).
  rows = merge_rows(out / f"{stem}.json",
                    [{**r, **{k: meta[k] for k in ROW_META}} for r in rows], ROW_KEY,
                    meta=meta)
  lines = [f"| {r['config']} | {r.get('preset', '')} | {r.get('dropout_rng', '')} | "
           f"{r['batch']} | {r['step_s']:.3f} | {r['examples_per_s']:.1f} | "
           f"{r['tokens_per_s']:.0f} | {r.get('device', '')} | {r.get('date', '')} |" for r in rows]
  (out / f"{stem}.md").write_text(
      f"# {stem} (every run merged; latest {meta['date']})\n\n"
      "| config | preset | dropout bits | batch | step (s) | examples/s | tokens/s | device | "
      "date |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
      f"Latest invocation: {provenance_line(meta)} Each row's own: the JSON.\n")

if __name__ == "__main__":
  main()
