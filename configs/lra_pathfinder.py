"""LRA Pathfinder-32 (hard): 1024 pixels = 4 segments of 256; LRA's base config.
Presets (`:rmt`, `:rlt`, `:cpu`): rmaat_jax/configs/presets.py.

Offline by default: 160K / 20K / 20K generated images (rmaat_jax.data.pathfinder; about
200 images/s per core, raise data.generate_workers). With LRA's files:
--config.data.generate=False --config.data.manual_dir=/path/to/lra_release/pathfinder32
"""

import ml_collections

from rmaat_jax.configs import default, presets


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """`preset`: what follows the colon in --config configs/lra_pathfinder.py:rmt,cpu (presets.py)."""
  config = default.get_config()
  model = config.model
  model.num_segments = 4
  model.emb_dim = 64
  model.num_heads = 2
  model.num_layers = 2
  model.mlp_dim = 128
  config.train.batch_size = 512
  config.train.num_steps = 62_500  # ~200 epochs of 160K
  config.train.warmup_steps = 1_000
  config.train.learning_rate = 1e-3
  config.train.eval_every = 1_000
  config.train.checkpoint_every = 1_000
  config.data.dataset = "pathfinder"
  config.data.generate = True
  config.data.generate_sizes = (160_000, 20_000, 20_000)
  config.data.generate_workers = 2
  # :cpu (presets.py): the shared small model; these steps train on 2 CPU cores in minutes.
  return presets.apply(config, preset, cpu_train=dict(num_steps=600, warmup_steps=60),
                       cpu_data=dict(generate_sizes=(20_000, 1_000, 1_000), generate_workers=2))
