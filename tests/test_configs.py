"""Every config file builds a valid model whose parameters can be initialised."""

import pathlib

import jax
import jax.numpy as jnp
import pytest

import configs
from rmaat_jax.models import build_model

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(p for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py")


def load_config(path):
  return configs.load(path.stem)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_builds_model(path):
  config = load_config(path)
  assert {"model", "train", "data"} <= set(config.keys())
  model = build_model(config.model)
  seq_len = config.model.seq_len
  shape = (2, 2, seq_len) if config.model.dual_encoder else (2, seq_len)
  tokens = jnp.zeros(shape, jnp.int32)
  variables = jax.eval_shape(lambda k: model.init({"params": k}, tokens), jax.random.key(0))
  logits = jax.eval_shape(lambda v: model.apply(v, tokens), variables)
  assert logits.shape == (2, config.model.num_classes)


def test_listops_config_matches_the_paper_setup():
  config = load_config(CONFIG_DIR / "lra_listops.py")
  assert config.model.seq_len // config.model.num_segments == 512
  assert (config.model.emb_dim, config.model.num_heads, config.model.num_layers) == (512, 8, 4)
