"""The numbers behind RESULTS.md's model fidelity checks (issue 10).

    python -m experiments.model_checks

- Retention factor, `retention="paper"`: RF(t, T) for T = 4 and 16; the largest difference
  from the closed form A^(t-1) (1 - A) / (1 - A^T), A = exp(-1 / tau_L), over T = 1..300;
  whether RF(t, T + 1) < RF(t, T) for every t <= T, T = 1..64.
- bfloat16: the relative error (root of the summed squared differences over the summed
  squares) of the parameter gradient with `compute_dtype=bfloat16` against float32 compute,
  for tests/test_model.py's TINY model (d 16, 2 heads, 2 layers, 2 memory tokens, astro
  attention, dropout 0.2) at 6 segments of 6 tokens, AMRB, loss sum(logits^2), batch 3 -
  the quantity test_bfloat16_computes_in_bf16_and_accumulates_gradients_in_float32 bounds by
  3 %.

Prints and writes experiments/results/model_checks.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np

from experiments.results_store import provenance, provenance_line

HERE = pathlib.Path(__file__).resolve().parent

TINY = dict(
    vocab_size=13, num_classes=3, pad_id=0, seq_len=36, num_segments=6, num_memory_tokens=2,
    emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32, dropout_rate=0.2,
    attention="astro", position="projected", position_scale=2.0, alpha=0.25,
    retention="paper", backprop="amrb", pool="memory", dual_encoder=False)


def retention() -> dict:
  from rmaat_jax.models.retention import TAU_L, retention_factors

  a = np.exp(-1.0 / TAU_L)
  worst = 0.0
  for t in range(1, 301):
    k = np.arange(1, t + 1)
    closed = a ** (k - 1) * (1 - a) / (1 - a ** t)
    worst = max(worst, float(np.abs(retention_factors(t) - closed).max()))
  decreasing = all(np.all(retention_factors(t + 1)[:t] < retention_factors(t))
                   for t in range(1, 65))
  rf16 = retention_factors(16)
  return {"tau_l": float(TAU_L), "rf_T4": retention_factors(4).tolist(),
          "rf_T16_first_last": [float(rf16[0]), float(rf16[-1])],
          "max_abs_diff_closed_form_T1_300": worst,
          "rf_decreases_with_T_for_T1_64": bool(decreasing)}


def bf16_gradient_error() -> float:
  import jax
  import jax.numpy as jnp

  from rmaat_jax.models import build_model

  cfg = TINY
  tokens = jax.random.randint(jax.random.key(1), (3, cfg["seq_len"]), 1, cfg["vocab_size"])
  lengths = np.array([cfg["seq_len"], cfg["seq_len"] - 7, 4])
  tokens = jnp.where(np.arange(cfg["seq_len"]) >= lengths[:, None], 0, tokens).astype(jnp.int32)
  params = jax.jit(lambda key: build_model(cfg).init({"params": key}, tokens))(
      jax.random.key(0))["params"]

  def grads(dtype):
    model = build_model(cfg, dtype)
    return jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
        {"params": p}, tokens, train=True, rngs={"dropout": jax.random.key(1)}) ** 2)))(params)

  low = jax.tree_util.tree_leaves(grads(jnp.bfloat16))
  ref = jax.tree_util.tree_leaves(grads(jnp.float32))
  err = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(low, ref, strict=True))
  return float(np.sqrt(err / sum(float(jnp.sum(b ** 2)) for b in ref)))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=HERE / "results")
  args = parser.parse_args(argv)
  import jax

  out = {"retention": retention(), "bf16_relative_gradient_error": bf16_gradient_error()}
  r = out["retention"]
  lines = [
      f"- RF(t, 4): {', '.join(f'{v:.3f}' for v in r['rf_T4'])}; RF(1, 16) = "
      f"{r['rf_T16_first_last'][0]:.3f}, RF(16, 16) = {r['rf_T16_first_last'][1]:.2e}",
      f"- largest |RF - A^(t-1)(1-A)/(1-A^T)|, T = 1..300: "
      f"{r['max_abs_diff_closed_form_T1_300']:.1e}",
      f"- RF(t, T+1) < RF(t, T) for every t <= T, T = 1..64: "
      f"{r['rf_decreases_with_T_for_T1_64']}",
      f"- bf16 vs float32 relative gradient error (TINY, 6 segments, AMRB): "
      f"{100 * out['bf16_relative_gradient_error']:.2f} %"]
  meta = {**provenance(args.machine, module=__spec__.name, argv=argv),
          "jax": jax.__version__, "model": {"bf16_relative_gradient_error": TINY}}
  print("\n".join(lines))
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "model_checks.json").write_text(json.dumps({"meta": meta, **out}, indent=1)
                                                  + "\n")
  (args.out_dir / "model_checks.md").write_text(
      f"# model_checks ({meta['date']}, {meta['machine']})\n\n"
      + "\n".join(lines) + f"\n\n{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
