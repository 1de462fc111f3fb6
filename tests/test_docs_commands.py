"""Every command the user-facing docs show names a module and files that exist.

README.md, docs/*.md and experiments/RESULTS.md quote `python -m <module>` commands and
`--config configs/<task>.py` files; a module moved or renamed without its docs fails here.
(CHANGELOG.md records history, so its commands may name modules as they were.)
"""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "experiments" / "RESULTS.md",
        *sorted((ROOT / "docs").glob("*.md"))]
MODULE_RE = re.compile(r"python -m ([A-Za-z_][\w.]*\w)")
CONFIG_RE = re.compile(r"--config[ =](?:/path/to/checkout/)?(configs/[\w]+\.py)")
LINK_RE = re.compile(r"\]\(([^)#\s]+)\)")


def _current_text(doc):
  """The doc without the commands its provenance lines record as they were run (history;
  experiments.report adds "(now `python -m ...`)" where a module has moved since)."""
  lines = []
  for line in doc.read_text().splitlines():
    if line.startswith("_Raw:"):
      line = " ".join(part.split(")", 1)[0] for part in line.split("(now ")[1:])
    lines.append(line)
  return "\n".join(lines)


def _quoted(pattern):
  return sorted({(doc.relative_to(ROOT).as_posix(), match)
                 for doc in DOCS for match in pattern.findall(_current_text(doc))})


@pytest.mark.parametrize("doc, module", _quoted(MODULE_RE))
def test_every_quoted_module_exists(doc, module):
  if module == "pytest":
    return
  assert importlib.util.find_spec(module) is not None, f"{doc}: python -m {module}"


@pytest.mark.parametrize("doc, config", _quoted(CONFIG_RE))
def test_every_quoted_config_file_exists(doc, config):
  assert (ROOT / config).is_file(), f"{doc}: --config {config}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
  targets = [t for t in LINK_RE.findall(doc.read_text()) if "://" not in t]
  missing = [t for t in targets if not (doc.parent / t).exists()]
  assert not missing, f"{doc.relative_to(ROOT)}: {missing}"
