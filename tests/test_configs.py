"""Every config file builds a valid model whose parameters can be initialised."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from rmaat_jax import configs
from rmaat_jax.config_checks import validate_config
from rmaat_jax.data.tasks import TASKS as TASKS_BY_NAME
from rmaat_jax.errors import ConfigError
from rmaat_jax.models import build_model

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("lra_*.py"))  # the task configs


def load_config(path):
  return configs.load(path.stem)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_builds_model(path):
  config = load_config(path)
  assert {"model", "train", "data"} <= set(config.keys())
  model_config = validate_config(config)  # with the dataset's vocabulary, classes, length
  model = build_model(model_config)
  seq_len = model_config.seq_len
  shape = (2, 2, seq_len) if model_config.dual_encoder else (2, seq_len)
  tokens = jnp.zeros(shape, jnp.int32)
  variables = jax.eval_shape(lambda k: model.init({"params": k}, tokens), jax.random.key(0))
  logits = jax.eval_shape(lambda v: model.apply(v, tokens), variables)
  assert logits.shape == (2, TASKS_BY_NAME[config.data.dataset].num_classes)


def test_listops_config_matches_the_paper_setup():
  config = load_config(CONFIG_DIR / "lra_listops.py")
  assert validate_config(config).segment_len == 512
  assert (config.model.emb_dim, config.model.num_heads, config.model.num_layers) == (512, 8, 4)


TASKS = [p.stem for p in CONFIG_FILES if p.stem.startswith("lra_")]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preset, model", [
    ("", ("astro", "amrb", "paper")), ("rmaat", ("astro", "amrb", "paper")),
    ("rmt", ("softmax", "bptt", "none")), ("rlt", ("linear", "bptt", "none")),
    ("cpu", ("astro", "amrb", "paper")), ("rmt,cpu", ("softmax", "bptt", "none")),
    (" cpu , rlt ", ("linear", "bptt", "none")),
])
def test_presets_choose_the_paper_models_and_the_cpu_size(task, preset, model):
  config = configs.load(task, preset)
  full = configs.load(task)
  assert (config.model.attention, config.model.backprop, config.model.retention) == model
  if "cpu" in preset:
    assert config.model.emb_dim == 64 and config.model.num_layers == 1
    assert config.train.num_steps <= 600 and config.train.warmup_steps < config.train.num_steps
  else:
    assert config.model.emb_dim == full.model.emb_dim
    assert config.train.num_steps == full.train.num_steps
  # The task's facts and its segments never change with a preset.
  assert validate_config(config).segment_len == validate_config(full).segment_len
  for field in ("seq_len", "num_segments"):
    assert config.model[field] == full.model[field]
  assert config.data.dataset == full.data.dataset


@pytest.mark.parametrize("preset, message", [
    ("gpu", "unknown config preset 'gpu'; valid presets: rmaat, rmt, rlt, cpu"),
    ("rmt,rlt", "rmt and rlt both choose the model"),
])
def test_bad_presets_are_named(preset, message):
  with pytest.raises(ConfigError, match=message):
    configs.load("lra_image", preset)


def test_unknown_preset_on_the_command_line_is_one_error_line(tmp_path):
  process = subprocess.run(
      [sys.executable, "-m", "rmaat_jax.main", "--config", "configs/lra_listops.py:rmt,tiny",
       f"--workdir={tmp_path}"], cwd=CONFIG_DIR.parent, capture_output=True, text=True,
      timeout=120)
  assert process.returncode == 2, process.stderr
  assert process.stderr.strip().splitlines() == [
      "error: unknown config preset 'tiny'; valid presets: rmaat, rmt, rlt, cpu (at most one "
      "of rmaat/rmt/rlt, plus cpu; e.g. configs/lra_listops.py:rmt,cpu)"]
  assert not any(tmp_path.iterdir())


def test_checking_a_config_imports_neither_jax_nor_the_data_libraries():
  # The command line validates first: a mistake must cost a fraction of a second. The checks
  # import the Pathfinder generator (for its difficulties), which must not render its stamps.
  code = ("import sys, rmaat_jax.config_checks, rmaat_jax.configs as c; c.load('lra_listops'); "
          "print(sorted(m for m in ('jax', 'flax', 'grain', 'tensorflow_datasets', "
          "'tensorflow') if m in sys.modules)); "
          "print(sys.modules['rmaat_jax.data.pathfinder'].stamps.cache_info().currsize)")
  out = subprocess.run([sys.executable, "-c", code], cwd=CONFIG_DIR.parent,
                       capture_output=True, text=True, timeout=60, check=True)
  assert out.stdout.split() == ["[]", "0"], out.stdout


def test_loading_a_missing_task_config_names_the_folder_or_the_configs(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match="no task config .*lra_listop.py; task configs: "
                                        "lra_image, lra_listops"):
    configs.load("lra_listop")
  # A wheel install has rmaat_jax but not the repository's configs/ folder.
  missing = tmp_path / "configs"
  monkeypatch.setattr(configs, "TASK_CONFIG_DIR", missing)
  folder = re.escape(str(missing))
  with pytest.raises(ConfigError, match=rf"no task config folder {folder}\b.*--config"):
    configs.load("lra_listops")


def test_the_distribution_installs_one_top_level_name():
  # A top-level `configs` (or any other name) in site-packages would collide with other
  # projects': everything installed lives under rmaat_jax.
  tomllib = pytest.importorskip("tomllib")
  setuptools = pytest.importorskip("setuptools")
  find = tomllib.loads((CONFIG_DIR.parent / "pyproject.toml").read_text())[
      "tool"]["setuptools"]["packages"]["find"]
  discover = (setuptools.find_namespace_packages if find.get("namespaces", True)
              else setuptools.find_packages)
  packages = discover(where=str(CONFIG_DIR.parent / find.get("where", ["."])[0]),
                      include=find["include"], exclude=find.get("exclude", ()))
  assert {name.split(".")[0] for name in packages} == {"rmaat_jax"}, packages
  assert "rmaat_jax.configs" in packages
  # What the current install put on the path, where it says (none of it without an install):
  # the metadata's top_level.txt, and an editable install's finder mapping.
  stale = "installed before pyproject.toml changed: reinstall with pip install -e ."
  for distribution in importlib.metadata.distributions(name="rmaat_jax"):
    top_level = distribution.read_text("top_level.txt")
    if top_level is not None:
      assert set(top_level.split()) == {"rmaat_jax"}, (top_level, stale)
  finders = [module for name, module in sys.modules.items()
             if name.startswith("__editable___rmaat_jax") and name.endswith("_finder")]
  for finder in finders:
    names = {*getattr(finder, "MAPPING", {}), *getattr(finder, "NAMESPACES", {})}
    assert {name.split(".")[0] for name in names} <= {"rmaat_jax"}, (names, stale)
