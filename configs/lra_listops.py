"""LRA ListOps: 2000 tokens padded to 2048 = 4 segments of 512; LRA's base config.
Presets (`:rmt`, `:rlt`, `:cpu`): rmaat_jax/configs/presets.py.

Vocabulary (docs/data.md section 2.1): pad, unk, digits 0-9, [MIN, [MAX, [MED, [SM and the
closing bracket `]` = 17 ids; 10 classes.
"""

import ml_collections

from rmaat_jax.configs import default, presets


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """`preset`: what follows the colon in --config configs/lra_listops.py:rmt,cpu (presets.py)."""
  config = default.get_config()
  model = config.model
  model.num_segments = 4
  model.emb_dim = 512
  model.num_heads = 8
  model.num_layers = 4
  model.mlp_dim = 1024

  config.train.batch_size = 32
  config.train.num_steps = 5000
  config.train.learning_rate = 5e-4
  config.data.dataset = "listops"
  # Offline by default: 96K / 2K / 2K generated trees (docs/data.md section 3). With LRA's files:
  # --config.data.generate=False --config.data.manual_dir=/path/to/lra_release/listops-1000
  config.data.generate = True
  # :cpu (presets.py): the shared small model; these steps train on 2 CPU cores in minutes.
  return presets.apply(config, preset, cpu_train=dict(num_steps=400, warmup_steps=40),
                       cpu_data=dict(generate_sizes=(20_000, 1_000, 1_000)))
