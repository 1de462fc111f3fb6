"""The paper's headline comparison: RMAAT against RMT on the Retrieval config's model.

    python -m experiments.benchmarks.paper_table [--batch 4] [--tokens 1024 4096 16384 65536]
                                      [--time_max_tokens 4096] [--runs 3]
                                      [--amrb_replay block segment]

RMAAT = astromorphic attention, AMRB, retention factor (the :rmaat preset); RMT = softmax
attention, BPTT, no retention factor (:rmt). Same model size (configs/lra_retrieval.py: d
128, 4 layers, segments of 512 tokens, two documents per example), same batch, one run.
Memory: XLA's compiled memory of one training gradient (arguments + outputs + temporaries),
the same measurement for both models, with rbg dropout bits as on a GPU. Step time: median
of --runs gradient steps after a warm-up, up to --time_max_tokens tokens per document, with
the default dropout bits (model.dropout_rng="auto"). RMAAT is measured with each
--amrb_replay. The paper reports 4.41x less memory and 1.73x faster training for RMAAT
(Retrieval). RMT's attention is `jax.nn.dot_product_attention` (XLA's fused attention on
CPU; with `--dtype bfloat16` on a GPU, cuDNN's flash attention: the baseline as it is run
in practice). Writes experiments/results/paper_table_<platform or --tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp

from experiments.results_store import RESULTS_DIR, jax_machine, provenance, provenance_line
from rmaat_jax import configs
from rmaat_jax.configs.presets import MODEL_PRESETS
from rmaat_jax.data.tasks import model_config
from rmaat_jax.memory import gradient_step_profile

REPLAYS = ("block", "segment")  # model.amrb_replay values for RMAAT rows
MIB = 2.0 ** 20


def measure(model: str, tokens: int, batch: int, runs: int, amrb_replay: str = "block",
            dtype: str = "float32") -> dict:
  config = configs.load("lra_retrieval")
  base = model_config(config)
  segment_len = base["seq_len"] // base["num_segments"]
  cfg = {**base, **MODEL_PRESETS[model], "seq_len": tokens,
         "num_segments": tokens // segment_len, "amrb_replay": amrb_replay}
  # Memory with "rbg" dropout bits, as on a GPU (CPU compilation stands in for it;
  # docs/method.md 5.1). Time with the default "auto" bits: what this machine runs (on CPU
  # threefry; rbg is 2x slower there), so on CPU a timed row compiles twice.
  on_cpu = jax.default_backend() == "cpu"
  compute = jnp.dtype(dtype)
  profile = gradient_step_profile({**cfg, "dropout_rng": "rbg"}, batch,
                                  time_runs=0 if on_cpu else runs, dtype=compute)
  if on_cpu and runs:
    profile["step_s"] = gradient_step_profile(cfg, batch, time_runs=runs,
                                              dtype=compute)["step_s"]
  return {"model": model, "amrb_replay": amrb_replay if cfg["backprop"] == "amrb" else None,
          "tokens": tokens, "segments": cfg["num_segments"], "dtype": dtype,
          "memory_mib": profile["total"] / MIB, "temp_mib": profile["temp"] / MIB,
          "step_s": profile.get("step_s"), "timed_dropout_rng": "auto",
          "rmt_attention": "jax.nn.dot_product_attention"}


def table(rows: list[dict], tokens: list[int]) -> str:
  lines = ["| tokens per document | segments | RMAAT's AMRB replay | RMAAT memory (MiB) | "
           "RMT memory (MiB) | RMT / RMAAT memory | RMAAT step (s) | RMT step (s) | "
           "RMT / RMAAT time |",
           "|---|---|---|---|---|---|---|---|---|"]
  for n in tokens:
    b = next(r for r in rows if r["model"] == "rmt" and r["tokens"] == n)
    for a in (r for r in rows if r["model"] == "rmaat" and r["tokens"] == n):
      timed = a["step_s"] is not None and b["step_s"] is not None
      lines.append(
          f"| {n} | {a['segments']} | {a['amrb_replay']} | {a['memory_mib']:.1f} | "
          f"{b['memory_mib']:.1f} | **{b['memory_mib'] / a['memory_mib']:.2f}x** | "
          + (f"{a['step_s']:.3f} | {b['step_s']:.3f} | **{b['step_s'] / a['step_s']:.2f}x** |"
             if timed else "- | - | - |"))
  lines.append("")
  lines.append("Paper (Retrieval, GPU): RMAAT 4.41x less memory, 1.73x faster. RMAAT's replay: "
               "block = model.amrb_replay=\"block\" (the default: one layer's activations "
               "live, one extra forward of L-1 blocks), segment = the paper's whole-segment "
               "replay.")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
  parser.add_argument("--time_max_tokens", type=int, default=4096)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--amrb_replay", nargs="+", choices=REPLAYS, default=list(REPLAYS),
                      help="RMAAT rows to measure, one per replay")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype of both models (bfloat16: on a GPU, RMT's attention "
                      "runs cuDNN's flash attention)")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--tag", default="", help="file name paper_table_<tag> (default: the "
                      "platform, e.g. paper_table_cpu)")
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: JAX's accelerator, "
                      "else the CPU and its cores)")
  args = parser.parse_args(argv)
  stamp = provenance(args.machine or jax_machine(), module=__spec__.name,
                     argv=argv)
  rows = []
  for tokens in args.tokens:
    runs = args.runs if tokens <= args.time_max_tokens else 0
    for model, replay in [("rmaat", r) for r in args.amrb_replay] + [("rmt", "block")]:
      row = measure(model, tokens, args.batch, runs, replay, args.dtype)
      rows.append(row)
      print(json.dumps(row), flush=True)
  text = table(rows, args.tokens)
  print(text)
  device = jax.devices()[0]
  meta = {**stamp, "platform": device.platform,
          "device": str(device.device_kind), "jax": jax.__version__, "batch": args.batch,
          "dtype": args.dtype,
          "config": "configs/lra_retrieval.py (d 128, 4 layers, 512-token segments, dual)",
          "memory": "XLA compiled memory of one training gradient (args + outputs + temp)",
          # The config's model; each row sets seq_len (its tokens), num_segments, amrb_replay
          # and its preset's fields.
          "model": model_config(configs.load("lra_retrieval")),
          "presets": {m: MODEL_PRESETS[m] for m in ("rmaat", "rmt")}}
  args.out_dir.mkdir(parents=True, exist_ok=True)
  stem = args.out_dir / f"paper_table_{args.tag or device.platform}"
  stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  stem.with_suffix(".md").write_text(
      f"# paper_table ({meta['date']}, {meta['platform']}: {meta['device']}, jax "
      f"{meta['jax']}, batch {args.batch})\n\n{text}\n\n{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
