"""The docs' measured numbers, generated from the raw files in experiments/results/.

    python -m experiments.report            # rewrites the generated parts in place
    python -m experiments.report --check    # exit 1 listing every part that differs

Two kinds of markers; everything outside them is hand-written and kept as it is:

- a block, on lines of its own: `<!-- report:NAME -->` ... `<!-- /report -->`. The text
  between is report_tables.BLOCKS[NAME](raw): a Markdown table and the line saying where
  it comes from (raw file, date, machine, commit, command).
- an inline number: `<!-- n:NAME -->71.3 %<!-- /n -->` (on one line). NAME is a family and
  dot-separated arguments, `lc_acc.image.rmaat.main`; the text is
  report_numbers.NUMBERS[family](raw, *arguments).

A marker whose name has no function, or that needs a raw file that is missing, is an error
naming it (exit 2). Files: experiments/RESULTS.md, README.md and docs/method.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "experiments" / "results"
DOC_FILES = (ROOT / "experiments" / "RESULTS.md", ROOT / "README.md", ROOT / "docs" / "method.md")

BLOCK_RE = re.compile(r"<!-- report:(?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /report -->", re.S)
NUMBER_RE = re.compile(r"<!-- n:(?P<name>[\w.-]+) -->(?P<body>[^\n]*?)<!-- /n -->")
CODE_SPAN_RE = re.compile(r"`[^`\n]+`")

# Where each experiment module lives now, so that a recorded command with an older module
# path still tells the reader what to run.
MODULES = {
    **{name: f"experiments.benchmarks.{name}" for name in (
        "memory_scaling", "compare_memory", "step_time", "profile_step", "paper_table",
        "segment_memory", "train_throughput", "data_throughput")},
    **{name: f"experiments.reliability.{name}" for name in (
        "fault_injection", "faults", "collective_stress", "multiprocess_check", "cli_mistakes",
        "no_tensorflow")},
    **{name: f"experiments.data_checks.{name}" for name in (
        "pathfinder_reference", "generator_stats")},
}


class ReportError(Exception):
  """A marker with no function, or a raw file that is missing: the docs cannot be made."""


class Raw:
  """The raw results folder. Reads are cached, and a missing file is a ReportError naming
  it, so no table is ever made from a file that is not there."""

  def __init__(self, results_dir: pathlib.Path) -> None:
    self.dir = pathlib.Path(results_dir)
    self._cache: dict[str, Any] = {}

  def path(self, name: str) -> pathlib.Path:
    path = self.dir / name
    if not path.is_file():
      raise ReportError(f"raw file missing: {path}")
    return path

  def exists(self, name: str) -> bool:
    return (self.dir / name).is_file()

  def json(self, name: str) -> Any:
    if name not in self._cache:
      self._cache[name] = json.loads(self.path(name).read_text())
    return self._cache[name]

  def text(self, name: str) -> str:
    return self.path(name).read_text()


# ----------------------------------------------------------------------------- provenance


@dataclass
class Source:
  """Where a table's numbers come from: the raw files and what they record."""

  files: Sequence[str]
  records: Iterable[Mapping[str, Any]] = ()  # meta dicts or rows with date/machine/...
  rerun: str = ""  # the command that remakes the file, said where none is recorded
  extra: Mapping[str, Any] = field(default_factory=dict)  # explicit fields (override)


def _distinct(values: Iterable[Any]) -> list[str]:
  return list(dict.fromkeys(str(v) for v in values if v not in (None, "")))


def _module_note(command: str) -> str:
  """'(now `python -m experiments.benchmarks.X`)' when the recorded module has moved."""
  match = re.match(r"python -m experiments\.(\w+)\b", command)
  if match and match.group(1) in MODULES:
    return f" (now `python -m {MODULES[match.group(1)]}`)"
  return ""


def provenance(source: Source) -> str:
  """One line under a table: raw files, dates, machines, commits and commands."""
  records = [dict(r) for r in source.records]
  get = lambda key: source.extra.get(key) or [r.get(key) for r in records]  # noqa: E731
  as_list = lambda v: [v] if isinstance(v, str) else v  # noqa: E731
  dates = sorted(_distinct(as_list(get("date"))))
  machines = _distinct(as_list(get("machine")))
  commits = _distinct(as_list(get("commit")))
  # Invocations differing only in shell quoting are one command.
  commands = list({c.replace("'", ""): c for c in _distinct(as_list(get("command")))}.values())
  files = ", ".join(f"[results/{f}](results/{f})" for f in source.files)
  parts = [f"Raw: {files}"]
  if not dates:
    parts.append("date not recorded")
  else:
    parts.append(f"date {dates[0]}" if len(dates) == 1 else f"dates {dates[0]} to {dates[-1]}")
  parts.append(f"machine {' / '.join(machines)}" if machines else "machine not recorded")
  if commits:
    parts.append(("commit " if len(commits) == 1 else "commits ") + ", ".join(commits))
  else:
    parts.append("commit not recorded")
  if commands:
    shown = f"`{commands[0]}`{_module_note(commands[0])}"
    more = len(commands) - 1
    others = f"{more} more invocation{'s' * (more > 1)}"
    parts.append("command " + shown + (f" (and {others}: the JSON)" if more else ""))
  else:
    parts.append("command not recorded" + (f"; rerun: `{source.rerun}`" if source.rerun else ""))
  return "_" + "; ".join(parts) + "._"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def block(table: str, source: Source, note: str = "") -> str:
  """A block's text: the table, an optional generated note, the provenance line."""
  return "\n\n".join(p for p in (table, note, provenance(source)) if p)


# ----------------------------------------------------------------------------- rendering


# What a table or number function raises when a raw file lacks what it reads (or a
# marker's arguments name no row): reported as an error naming the part.
MISSING_VALUE = (KeyError, IndexError, TypeError, ValueError, AttributeError, StopIteration,
                 ZeroDivisionError)


@dataclass
class Outcome:
  text: str
  differs: list[str]  # "block NAME" / "number NAME" whose stored text is not the generated one
  errors: list[str]


def _registries() -> tuple[Mapping[str, Callable[[Raw], str]], Mapping[str, Callable[..., str]]]:
  # Imported here: the tables import this module's helpers.
  from experiments.report_numbers import NUMBERS
  from experiments.report_tables import BLOCKS
  return BLOCKS, NUMBERS


def render(text: str, raw: Raw, blocks: Mapping[str, Callable[[Raw], str]] | None = None,
           numbers: Mapping[str, Callable[..., str]] | None = None) -> Outcome:
  """`text` with every block and inline number regenerated from `raw`."""
  if blocks is None or numbers is None:
    blocks, numbers = _registries()
  differs: list[str] = []
  errors: list[str] = []

  def make(kind: str, name: str, old: str, build: Callable[[], str]) -> str:
    try:
      new = build()
    except ReportError as e:
      errors.append(f"{kind} {name}: {e}")
      return old
    except MISSING_VALUE as e:  # a raw file without the field or row the part needs
      errors.append(f"{kind} {name}: the raw files lack a value it needs "
                    f"({type(e).__name__}: {e})")
      return old
    if new != old:
      differs.append(f"{kind} {name}")
    return new

  def one_block(m: re.Match[str]) -> str:
    name, old = m.group("name"), m.group("body")
    if name not in blocks:
      errors.append(f"block {name}: no such block (report_tables.BLOCKS has no function)")
      return m.group(0)
    body = make("block", name, old, lambda: "\n" + blocks[name](raw).strip("\n") + "\n\n")
    return f"<!-- report:{name} -->\n{body}<!-- /report -->"

  def one_number(m: re.Match[str]) -> str:
    name, old = m.group("name"), m.group("body")
    family, *args = name.split(".")
    if family not in numbers:
      errors.append(f"number {name}: no such number (report_numbers.NUMBERS has no {family!r})")
      return m.group(0)

    build = lambda: numbers[family](raw, *args)  # noqa: E731
    return f"<!-- n:{name} -->{make('number', name, old, build)}<!-- /n -->"

  out = BLOCK_RE.sub(one_block, text)
  out = NUMBER_RE.sub(one_number, out)
  # An opening marker the patterns did not consume has no closing marker. (Markers quoted
  # in `code`, as in RESULTS.md's introduction, are text, not markers.)
  bare = CODE_SPAN_RE.sub("", out)
  if bare.count("<!-- report:") != len(BLOCK_RE.findall(bare)):
    errors.append("a `<!-- report:NAME -->` marker has no `<!-- /report -->` after it")
  if bare.count("<!-- n:") != len(NUMBER_RE.findall(bare)):
    errors.append("an inline `<!-- n:NAME -->` has no `<!-- /n -->` on the same line")
  return Outcome(out, differs, errors)


def run(files: Sequence[pathlib.Path], results_dir: pathlib.Path, check: bool,
        out: Callable[[str], None] = print) -> int:
  """Regenerates (or checks) `files`; 0 when all match, 1 when --check finds a difference,
  2 on an error (nothing is written then)."""
  raw = Raw(results_dir)
  outcomes = {path: render(path.read_text(), raw) for path in files}
  errors = [f"error: {p.name}: {e}" for p, o in outcomes.items() for e in o.errors]
  for line in errors:
    out(line)
  if errors:
    return 2
  differs = [f"{p.name}: {d} differs from the raw files in {results_dir}"
             for p, o in outcomes.items() for d in o.differs]
  if check:
    for line in differs:
      out(line)
    if differs:
      out("run `python -m experiments.report` to regenerate them")
    return 1 if differs else 0
  for path, outcome in outcomes.items():
    if outcome.differs:
      path.write_text(outcome.text)
  out(f"updated {len(differs)} generated part(s)" if differs else "all generated parts match")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 listing each part that differs")
  parser.add_argument("--results_dir", type=pathlib.Path, default=RESULTS_DIR)
  parser.add_argument("--files", type=pathlib.Path, nargs="+", default=list(DOC_FILES),
                      help="the docs holding markers (default: RESULTS.md, README.md, "
                      "docs/method.md)")
  args = parser.parse_args(argv)
  return run(args.files, args.results_dir, args.check)


if __name__ == "__main__":
  # Through the package's module, so that the tables' `from experiments.report import ...`
  # and this entry point share one ReportError and one Raw.
  from experiments.report import main as package_main
  sys.exit(package_main())
