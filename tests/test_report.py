"""experiments/report.py: RESULTS.md's tables and the docs' marked numbers are generated from
the raw files in experiments/results/, and a disagreement fails this default test."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from experiments import report


def _run(docs, results, check):
  lines: list[str] = []
  code = report.run(docs, results, check=check, out=lines.append)
  return code, "\n".join(lines)


def test_the_repository_docs_match_their_raw_files():
  code, output = _run(list(report.DOC_FILES), report.RESULTS_DIR, check=True)
  assert code == 0, output + "\n(run `python -m experiments.report` after remeasuring)"


def test_the_command_line_check_passes_on_the_repository():
  proc = subprocess.run([sys.executable, "-m", "experiments.report", "--check"], cwd=report.ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def copies(tmp_path):
  """The docs and the raw files, copied where a test may change them."""
  results = tmp_path / "results"
  shutil.copytree(report.RESULTS_DIR, results, ignore=shutil.ignore_patterns("*.png"))
  docs = []
  for path in report.DOC_FILES:
    docs.append(tmp_path / path.name)
    shutil.copy(path, docs[-1])
  return docs, results


def test_a_changed_raw_number_fails_the_check_naming_the_parts_and_regenerating_fixes_it(
    copies):
  docs, results = copies
  path = results / "learning_curves.json"
  data = json.loads(path.read_text())
  run = next(r for r in data["runs"]
             if (r["task"], r["model"], r["variant"]) == ("image", "rmt", "main"))
  run["test_accuracy"] = 0.4321
  path.write_text(json.dumps(data))

  code, output = _run(docs, results, check=True)
  assert code == 1
  assert "RESULTS.md: block learning_curves differs" in output
  assert "README.md: number lc_acc.image.rmt.main differs" in output
  before = {doc: doc.read_text() for doc in docs}
  assert all(doc.read_text() == before[doc] for doc in docs)  # --check writes nothing

  assert _run(docs, results, check=False)[0] == 0
  readme, results_md = (next(d for d in docs if d.name == name)
                        for name in ("README.md", "RESULTS.md"))
  assert "<!-- n:lc_acc.image.rmt.main -->43.2 %<!-- /n -->" in readme.read_text()
  assert "| 0.432 |" in results_md.read_text()
  assert _run(docs, results, check=True) == (0, "")
  # Idempotent: a second rewrite changes nothing.
  regenerated = {doc: doc.read_text() for doc in docs}
  assert _run(docs, results, check=False)[0] == 0
  assert all(doc.read_text() == regenerated[doc] for doc in docs)


def test_hand_written_text_outside_the_markers_is_kept(copies):
  docs, results = copies
  doc = docs[0]
  doc.write_text("Prose 1.\n<!-- report:segment_memory -->\nstale\n<!-- /report -->\nProse "
                 "2: <!-- n:seg_bptt_per_segment -->1 MiB<!-- /n --> per segment.\n")
  assert _run([doc], results, check=False)[0] == 0
  text = doc.read_text()
  assert text.startswith("Prose 1.\n<!-- report:segment_memory -->\n\n| layers |")
  assert "stale" not in text
  assert text.endswith("<!-- /report -->\nProse 2: <!-- n:seg_bptt_per_segment -->"
                       "75.0 MiB<!-- /n --> per segment.\n")


def test_an_unknown_marker_name_is_an_error_naming_it(tmp_path):
  doc = tmp_path / "doc.md"
  text = ("<!-- report:no_such_table -->\n<!-- /report -->\n"
          "a <!-- n:no_such_family.x -->1<!-- /n --> and <!-- n:lc_acc.image.nobody.main -->"
          "2<!-- /n -->\n")
  doc.write_text(text)
  code, output = _run([doc], report.RESULTS_DIR, check=False)
  assert code == 2
  assert "block no_such_table: no such block" in output
  assert "number no_such_family.x: no such number" in output
  assert "number lc_acc.image.nobody.main: the raw files lack a value" in output
  assert doc.read_text() == text  # nothing written on an error


def test_a_missing_raw_file_is_an_error_naming_it(copies):
  docs, results = copies
  (results / "segment_memory.json").unlink()
  code, output = _run(docs, results, check=True)
  assert code == 2
  assert "block segment_memory: raw file missing:" in output
  assert "segment_memory.json" in output


def test_an_unclosed_marker_is_an_error(tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text("<!-- report:segment_memory -->\nno end\n<!-- n:lc_runs -->12\n")
  code, output = _run([doc], report.RESULTS_DIR, check=True)
  assert code == 2
  assert "has no `<!-- /report -->`" in output and "has no `<!-- /n -->`" in output


def test_a_raw_file_that_records_its_commit_is_never_shown_as_not_recorded():
  """Every provenance line naming a single raw file whose `meta` records a commit shows it
  (a table built with no records would print "commit not recorded")."""
  text = (report.ROOT / "experiments" / "RESULTS.md").read_text()
  checked = 0
  for line in text.splitlines():
    files = re.findall(r"\[results/([\w.]+\.json)\]", line)
    if not line.startswith("_Raw:") or len(files) != 1:
      continue
    data = json.loads((report.RESULTS_DIR / files[0]).read_text())
    meta = data.get("meta") if isinstance(data, dict) else None
    if isinstance(meta, dict) and meta.get("commit"):
      checked += 1
      assert "commit not recorded" not in line, (files[0], line)
  assert checked >= 10, checked
