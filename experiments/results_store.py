"""Results files that keep every run: rows merged by run key, written atomically.

A sweep saves after every run with `merge_rows`: a rerun of some runs replaces exactly
those rows, and an invocation stopped part-way (Ctrl-C, a crash, a kill) leaves every other
row as it was, so a results file never silently loses rows another invocation produced.
Each row carries its own provenance (`provenance()`: date, machine, commit, command).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository root
RESULTS_DIR = ROOT / "experiments" / "results"  # every experiment's default output folder

Row = dict[str, Any]
Key = Callable[[Mapping[str, Any]], Any]


def key_of(fields: Iterable[str]) -> Key:
  """A row's key: the JSON of the named fields (missing ones are None)."""
  names = tuple(fields)
  return lambda row: json.dumps([row.get(name) for name in names], sort_keys=True)


def read_rows(path: pathlib.Path, section: str = "rows") -> list[Row]:
  """The rows of a results file written by merge_rows (empty when there is none)."""
  if not path.exists():
    return []
  return list(json.loads(path.read_text()).get(section, []))


def write_json(path: pathlib.Path, payload: Any) -> None:
  """Atomic: a reader (or a later invocation) never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(payload, indent=1) + "\n")
  os.replace(tmp, path)


def merge_rows(path: pathlib.Path, rows: Iterable[Row], key: Key, *,
               meta: Mapping[str, Any] | None = None, section: str = "rows",
               extra: Mapping[str, Any] | None = None) -> list[Row]:
  """Merges `rows` into the file at `path` and returns all its rows.

  A stored row whose key equals a new row's is replaced in place; other stored rows are
  kept in their order; new keys are appended. `meta` (the latest invocation's) and `extra`
  (other top-level entries) replace the file's.
  """
  payload = json.loads(path.read_text()) if path.exists() else {}
  merged = {key(row): row for row in payload.get(section, [])}
  for row in rows:
    merged[key(row)] = row
  payload[section] = list(merged.values())
  if meta is not None:
    payload["meta"] = dict(meta)
  payload.update(extra or {})
  write_json(path, payload)
  return payload[section]


def git_commit() -> str:
  """The repository's HEAD (with "+dirty" when tracked code has uncommitted changes;
  results files, which the experiments themselves rewrite, do not count), or "unknown"."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":(exclude)experiments/results", ":(exclude)*.md"],
                           cwd=ROOT, text=True, capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def provenance(machine: str | None = None, *, module: str | None = None,
               argv: Sequence[str] | None = None) -> Row:
  """Date, machine, commit and command of this invocation, for every row it writes.

  `module` and `argv` name the command when a script's main() is called with its own
  arguments (from a test or another script) rather than from the command line.
  """
  args = list(sys.argv[1:] if argv is None else argv)
  return {"date": datetime.datetime.now().isoformat(timespec="minutes"),
          "machine": machine or f"{platform.machine()} CPU x {os.cpu_count()}",
          "commit": git_commit(),
          "command": "python -m " + shlex.join([module or _module_name(), *args])}


def jax_machine() -> str | None:
  """The accelerator JAX computes on ("NVIDIA H100 80GB HBM3 x 1, x86_64 CPU x 16"), or None
  on the CPU backend (provenance's default then names the CPU). Imports jax."""
  import jax

  device = jax.devices()[0]
  if device.platform == "cpu":
    return None
  return (f"{device.device_kind} x {jax.device_count()}, {platform.machine()} CPU x "
          f"{os.cpu_count()}")


def provenance_line(meta: Mapping[str, Any]) -> str:
  """The line under a results table: date, machine, commit and command of the run."""
  return (f"_Date {meta.get('date')}; machine {meta.get('machine')}; commit "
          f"{meta.get('commit')}; command `{meta.get('command')}`._")


def _module_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else pathlib.Path(sys.argv[0]).stem
