"""LRA Text (IMDb, byte level): 4096 bytes = 8 segments of 512; LRA's base config.
Presets (`:rmt`, `:rlt`, `:cpu`): rmaat_jax/configs/presets.py.

TFDS downloads `imdb_reviews` on first use (internet).
"""

import ml_collections

from rmaat_jax.configs import default, presets


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """`preset`: what follows the colon in --config configs/lra_text.py:rmt,cpu (presets.py)."""
  config = default.get_config()
  model = config.model
  model.num_segments = 8
  model.emb_dim = 256
  model.num_heads = 4
  model.num_layers = 4
  model.mlp_dim = 1024
  config.train.batch_size = 32
  config.train.num_steps = 20_000
  config.train.learning_rate = 5e-4
  config.data.dataset = "text"
  # :cpu (presets.py): the shared small model; these steps train on 2 CPU cores in minutes.
  return presets.apply(config, preset,
                       cpu_train=dict(num_steps=300, warmup_steps=30, batch_size=16))
