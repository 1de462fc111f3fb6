"""Per-segment and per-layer training memory of the Text config's model (issue 13).

    python -m experiments.benchmarks.segment_memory [--batch 2]

Compiled temp memory (XLA buffer assignment) of one training gradient: BPTT at 2 and 4
segments (the difference / 2 is what BPTT stores per segment), AMRB at 1, 2 and 4 layers
with and without dropout (what AMRB's replay holds per layer), and with the whole-segment
replay (model.amrb_replay="segment") for comparison. Segments of 512 tokens.
Writes experiments/results/segment_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax

from experiments.results_store import RESULTS_DIR, jax_machine, provenance, provenance_line
from rmaat_jax import configs
from rmaat_jax.data.tasks import model_config
from rmaat_jax.memory import gradient_step_profile

MIB = 2.0 ** 20


def temp_mib(base: dict, batch: int, **changes) -> float:
  segment_len = base["seq_len"] // base["num_segments"]
  cfg = {**base, **changes}
  cfg["seq_len"] = segment_len * cfg["num_segments"]
  return gradient_step_profile(cfg, batch)["temp"] / MIB


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--machine", default=None,
                      help="how the results name the machine (default: JAX's accelerator, "
                      "else the CPU and its cores)")
  args = parser.parse_args(argv)
  device = jax.devices()[0]
  meta = {**provenance(args.machine or jax_machine(),
                       module=__spec__.name, argv=argv),
          "platform": device.platform, "device": str(device.device_kind), "jax": jax.__version__,
          "config": "configs/lra_text.py",
          "memory": "XLA compiled temp memory of one training gradient (buffer assignment)"}
  # "rbg" dropout bits, as on a GPU (CPU compilation stands in for it; docs/method.md 5.1)
  base = {**model_config(configs.load("lra_text")), "dropout_rng": "rbg"}
  # The base model; the measurements change backprop, num_segments (and seq_len with it),
  # num_layers, dropout_rate and amrb_replay.
  meta.update(model=base, segment_len=base["seq_len"] // base["num_segments"])
  bptt = {t: temp_mib(base, args.batch, backprop="bptt", num_segments=t) for t in (2, 4)}
  amrb = {(layers, rate): temp_mib(base, args.batch, backprop="amrb", num_segments=2,
                                   num_layers=layers, dropout_rate=rate)
          for layers in (1, 2, 4) for rate in (0.1, 0.0)}
  # The paper's whole-segment replay, for comparison (dropout on).
  segment_replay = {layers: temp_mib(base, args.batch, backprop="amrb", num_segments=2,
                                     num_layers=layers, amrb_replay="segment")
                    for layers in (1, 2, 4)}
  lines = [f"# segment_memory ({meta['date']}, {device.platform}, "
           f"Text config model, batch {args.batch})", "",
           f"BPTT temp: {bptt[2]:.1f} MiB at 2 segments, {bptt[4]:.1f} at 4: "
           f"**{(bptt[4] - bptt[2]) / 2:.1f} MiB per segment**", "",
           "| AMRB layers | temp, dropout 0.1 (MiB) | temp, no dropout (MiB) | "
           "temp, whole-segment replay, dropout 0.1 (MiB) |", "|---|---|---|---|"]
  lines += [f"| {n} | {amrb[(n, 0.1)]:.1f} | {amrb[(n, 0.0)]:.1f} | {segment_replay[n]:.1f} |"
            for n in (1, 2, 4)]
  lines += ["", provenance_line(meta)]
  text = "\n".join(lines)
  print(text)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "segment_memory.md").write_text(text + "\n")
  (args.out_dir / "segment_memory.json").write_text(json.dumps(
      {"meta": meta, "batch": args.batch, "bptt_temp_mib": bptt,
       "amrb_temp_mib": [{"layers": n, "dropout": r, "temp_mib": v}
                         for (n, r), v in amrb.items()],
       "amrb_segment_replay_temp_mib": [{"layers": n, "dropout": 0.1, "temp_mib": v}
                                        for n, v in segment_replay.items()]}, indent=1))


if __name__ == "__main__":
  main()
