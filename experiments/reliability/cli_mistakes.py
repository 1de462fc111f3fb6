"""Command-line mistakes a user makes: does each stop with exit status 2 and one line? (issue 6)

    python -m experiments.reliability.cli_mistakes

Runs `python -m rmaat_jax.main` with a mistyped override, overrides of the wrong type, an
unknown flag, a missing config file and a missing --workdir (each against a fresh, empty
workdir and data dir) and records the exit status, the `error:` lines, whether a traceback
was printed and whether anything was written. Prints and writes
experiments/results/cli_mistakes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

from experiments.reliability.faults import ROOT, error_lines
from experiments.results_store import RESULTS_DIR, provenance, provenance_line

CASES = {
    "mistyped override": ["--config.train.num_stepz=5"],
    "int field given a word": ["--config.train.num_steps=abc"],
    "float field given a word": ["--config.model.dropout_rate=high"],
    "unknown flag": ["--bogus_flag=1"],
    "missing config file": ["--config=configs/no_such_config.py"],
    "missing --workdir": [],  # run without --workdir
}


def run_case(tmp: pathlib.Path, flags: list[str]) -> dict:
  workdir = tmp / "work"
  workdir.mkdir()
  command = [sys.executable, "-m", "rmaat_jax.main"]
  if not any(f.startswith("--config=") for f in flags):
    command += ["--config", "configs/lra_listops.py"]
  if flags:
    command += [f"--workdir={workdir}", *flags]
  command += [f"--config.data.data_dir={tmp / 'tfds'}"]
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  return {"command": shlex.join(["python", *command[1:]]).replace(str(tmp), "TMP"),
          "exit_status": out.returncode, "error_lines": error_lines(out.stderr),
          "traceback": "Traceback" in out.stderr,
          "files_written": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                                  if p != workdir)}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
  parser.add_argument("--out_dir", type=pathlib.Path, default=RESULTS_DIR)
  args = parser.parse_args(argv)
  rows = {}
  for name, flags in CASES.items():
    with tempfile.TemporaryDirectory() as tmp:
      rows[name] = run_case(pathlib.Path(tmp), flags)
    print(name, json.dumps(rows[name]), flush=True)
  ok = {name: r["exit_status"] == 2 and len(r["error_lines"]) == 1 and not r["traceback"]
        and not r["files_written"] for name, r in rows.items()}
  lines = ["| mistake | flags | exit | one error line, no traceback, nothing written | "
           "the line |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    line = r["error_lines"][0] if r["error_lines"] else "-"
    flags = f"`{' '.join(CASES[name])}`" if CASES[name] else "(no --workdir)"
    lines.append(f"| {name} | {flags} | {r['exit_status']} | "
                 f"{'yes' if ok[name] else 'NO'} | {line.replace('|', '/')} |")
  table = "\n".join(lines)
  print(table)
  # Each case's own command (in its row) names the config it ran.
  meta = provenance(args.machine, module=__spec__.name, argv=argv)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  (args.out_dir / "cli_mistakes.json").write_text(
      json.dumps({"meta": meta, "cases": rows, "as_intended": ok}, indent=1) + "\n")
  (args.out_dir / "cli_mistakes.md").write_text(
      f"# cli_mistakes ({meta['date']}, {meta['machine']})\n\n{table}\n\n"
      f"{provenance_line(meta)}\n")


if __name__ == "__main__":
  main()
