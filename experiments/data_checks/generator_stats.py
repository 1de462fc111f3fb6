"""Statistics of the ListOps and Pathfinder generators against the original code (issue 3;
docs/data.md sections 3.4 and 4.4, RESULTS.md's generator statistics table).

    python -m experiments.data_checks.generator_stats --part listops [--listops 100000]
        [--listops_reference 10000]
    python -m experiments.data_checks.generator_stats --part pathfinder [--hard 4000] [--easy 2000]
        [--reference_hard 1000] [--reference_easy 1000] [--reference_free 300]

- listops: our generator (rmaat_jax.data.listops: its batches `default_rng([0, b])`, as
  `iter_examples(0)` draws them, before its repeat filter) until `--listops` trees are
  accepted: share of root draws accepted, length L (tokens: leaves + 2 per operator) mean and
  median, label shares. Then the same for `--listops_reference` trees of a line-by-line port
  of LRA's recursive `generate_tree` (lra_benchmarks/data/listops.py: Python's `random`,
  seeded 0; every tree is drawn to the end, then kept if 500 < L < 2000).
- pathfinder: our generator (rmaat_jax.data.pathfinder.generate_batch, the batches of 1000
  that `write_dataset` makes with seed 0, without PNG writing) for `--hard` / `--easy`
  images: mean pixel, share of non-zero pixels, images reaching 255, label 1 share,
  distractor contours per image; then experiments/data_checks/pathfinder_reference.py, the original
  snakes2.py emulated, for `--reference_hard` / `--reference_easy` images with OpenCV's real
  dilation border and `--reference_free` hard images with that border read as free pixels.

Writes experiments/results/generator_stats_<part>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import statistics
import sys
import time

import numpy as np

from experiments.results_store import RESULTS_DIR, provenance, provenance_line

# --- ListOps ------------------------------------------------------------------------------

def listops_ours(num: int, seed: int = 0) -> dict:
  from rmaat_jax.data import listops

  start = time.perf_counter()
  roots, lengths, labels = 0, [], []
  b = 0
  while len(labels) < num:
    batch = listops.sample_batch(np.random.default_rng([seed, b]))
    roots += batch.num_roots
    lengths += np.diff(batch.offsets).tolist()
    labels += batch.labels.tolist()
    b += 1
  accepted = len(labels)  # all of the last batch's trees count towards the acceptance
  return _listops_row(f"ours, {num} trees", roots, accepted, lengths[:num], labels[:num],
                      time.perf_counter() - start)


# A line-by-line port of LRA's generate_tree / to_value (lra_benchmarks/data/listops.py).
_OPS = ("[MIN", "[MAX", "[MED", "[SM")
_END = "]"
_VALUE_P = 0.25


def _lra_generate_tree(rng: random.Random, depth: int, max_depth: int = 10,
                       max_args: int = 10):
  r = rng.random() if depth < max_depth else 1
  if r > _VALUE_P:
    return rng.choice(range(10)), 1
  length = 2
  values = []
  for _ in range(rng.randint(2, max_args)):
    sub, sub_length = _lra_generate_tree(rng, depth + 1, max_depth, max_args)
    values.append(sub)
    length += sub_length
  tree = (rng.choice(_OPS), values[0])
  for value in values[1:]:
    tree = (tree, value)
  return (tree, _END), length


def _lra_to_value(t):
  if not isinstance(t, tuple):
    return t
  left, right = _lra_to_value(t[0]), _lra_to_value(t[1])
  if left in _OPS:
    return left, [right]
  if right == _END:
    op, args = left
    if op == "[MIN":
      return min(args)
    if op == "[MAX":
      return max(args)
    if op == "[MED":
      return int(np.median(args))
    return int(np.sum(args) % 10)
  return left[0], left[1] + [right]


def listops_reference(num: int, seed: int = 0) -> dict:
  rng = random.Random(seed)
  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
  start = time.perf_counter()
  roots, lengths, labels = 0, [], []
  while len(labels) < num:
    tree, length = _lra_generate_tree(rng, 1)
    roots += 1
    if 500 < length < 2000:
      lengths.append(length)
      labels.append(_lra_to_value(tree))
  return _listops_row(f"LRA's generate_tree (port), {num} trees", roots, len(labels),
                      lengths, labels, time.perf_counter() - start)


def _listops_row(name, roots, accepted, lengths, labels, seconds) -> dict:
  counts = np.bincount(labels, minlength=10) / len(labels)
  return {"generator": name, "root_draws": roots, "accepted": accepted,
          "acceptance": accepted / roots, "length_mean": float(np.mean(lengths)),
          "length_median": float(np.median(lengths)),
          "label_shares": [round(float(c), 4) for c in counts], "seconds": seconds}


def listops_table(rows: list[dict]) -> str:
  lines = ["| generator | acceptance | L mean / median | labels 0, 9 | labels 1-8 | s |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    s = r["label_shares"]
    lines.append(f"| {r['generator']} | {100 * r['acceptance']:.2f} % | "
                 f"{r['length_mean']:.0f} / {r['length_median']:.0f} | "
                 f"{100 * s[0]:.1f}, {100 * s[9]:.1f} % | {100 * min(s[1:9]):.1f}-"
                 f"{100 * max(s[1:9]):.1f} % | {r['seconds']:.0f} |")
  return "\n".join(lines)


# --- Pathfinder ---------------------------------------------------------------------------

def pathfinder_ours(difficulty: str, num: int, seed: int = 0, batch_size: int = 1000) -> dict:
  from rmaat_jax.data import pathfinder

  start = time.perf_counter()
  means, nonzero, top, labels, placed = [], [], [], [], []
  for b in range(-(-num // batch_size)):
    n = min(batch_size, num - b * batch_size)
    images, batch_labels, records = pathfinder.generate_batch(
        n, difficulty, pathfinder.batch_rng(seed, difficulty, b))
    means += images.reshape(n, -1).mean(1).tolist()
    nonzero += (images.reshape(n, -1) > 0).mean(1).tolist()
    top += images.reshape(n, -1).max(1).tolist()
    labels += batch_labels.tolist()
    placed += [len(r["contours"]) - 2 for r in records]
  length = pathfinder.CONTOUR_LENGTHS[difficulty]
  return {"generator": f"ours, {difficulty}, {num} images", "difficulty": difficulty,
          "images": num, "mean_pixel": statistics.fmean(means),
          "nonzero_share": statistics.fmean(nonzero),
          "images_reaching_255": sum(t == 255 for t in top),
          "label_1_share": statistics.fmean(labels),
          "distractor_slots": 20 // (length // 3),
          "distractors_placed_mean": statistics.fmean(placed),
          "seconds": time.perf_counter() - start}


def pathfinder_reference_row(difficulty: str, num: int, opencv_border: bool) -> dict:
  from experiments.data_checks import pathfinder_reference

  r = pathfinder_reference.measure(difficulty, num, seed=0, opencv_border=opencv_border)
  border = "OpenCV border" if opencv_border else "border read as free"
  return {"generator": f"original emulated ({border}), {difficulty}, {num} images", **r}


def pathfinder_table(rows: list[dict]) -> str:
  lines = ["| generator | mean pixel | non-zero | reach 255 | label 1 | distractors | "
           "pair success | s |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    pair = f"{100 * r['pair_success_rate']:.2f} %" if "pair_success_rate" in r else "-"
    lines.append(f"| {r['generator']} | {r['mean_pixel']:.2f} | "
                 f"{100 * r['nonzero_share']:.2f} % | {r['images_reaching_255']}/{r['images']} "
                 f"| {100 * r['label_1_share']:.1f} % | {r['distractors_placed_mean']:.2f} of "
                 f"{r['distractor_slots']} | {pair} | {r['seconds']:.0f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("listops", "pathfinder"), required=True)
  parser.add_argument("--listops", type=int, default=100_000)
  parser.add_argument("--listops_reference", type=int, default=10_000)
  parser.add_argument("--hard", type=int, default=4000)
  parser.add_argument("--easy", type=int, default=2000)
  parser.add_argument("--reference_hard", type=int, default=1000)
  parser.add_argument("--reference_easy", type=int, default=1000)
  parser.add_argument("--reference_free", type=int, default=300)
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args(argv)

  rows = []

  def add(row: dict) -> None:
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "seed_orientations_possible"}),
          flush=True)

  if args.part == "listops":
    add(listops_ours(args.listops))
    if args.listops_reference:
      add(listops_reference(args.listops_reference))
    table = listops_table(rows)
  else:
    for difficulty, n in (("hard", args.hard), ("easy", args.easy)):
      if n:
        add(pathfinder_ours(difficulty, n))
    for difficulty, n, opencv in (("hard", args.reference_hard, True),
                                  ("easy", args.reference_easy, True),
                                  ("hard", args.reference_free, False)):
      if n:
        add(pathfinder_reference_row(difficulty, n, opencv))
    table = pathfinder_table(rows)
  print(table)
  meta = {**provenance(args.machine, module=__spec__.name,
                      argv=argv),
          "python": platform.python_version(), "numpy": np.__version__}
  if args.part == "pathfinder":
    import PIL

    meta["pillow"] = PIL.__version__
  args.out_dir.mkdir(parents=True, exist_ok=True)
  stem = args.out_dir / f"generator_stats_{args.part}"
  stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)
                                       + "\n")
  stem.with_suffix(".md").write_text(
      f"# generator_stats --part {args.part} ({meta['date']}, {meta['machine']})\n\n"
      f"{table}\n\n{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
