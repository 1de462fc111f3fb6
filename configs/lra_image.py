"""LRA Image (CIFAR-10 grayscale, 1024 pixels = 4 segments of 256; LRA's base config).
Presets (`:rmt`, `:rlt`, `:cpu`): rmaat_jax/configs/presets.py.

TFDS downloads `cifar10` on first use (internet). Offline, the Fashion-MNIST substitute:
--config.data.dataset=fashion_mnist (results are labelled as such and are not comparable with
CIFAR-10).
"""

import ml_collections

from rmaat_jax.configs import default, presets


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """`preset`: what follows the colon in --config configs/lra_image.py:rmt,cpu (presets.py)."""
  config = default.get_config()
  model = config.model
  model.num_segments = 4
  model.emb_dim = 128
  model.num_heads = 8
  model.num_layers = 1
  model.mlp_dim = 128
  config.train.batch_size = 256
  config.train.num_steps = 35_000  # ~200 epochs of 45K
  config.train.warmup_steps = 1_000
  config.train.learning_rate = 1e-3
  config.train.eval_every = 1_000
  config.train.checkpoint_every = 1_000
  config.data.dataset = "image"
  # :cpu (presets.py): the shared small model; these steps train on 2 CPU cores in minutes.
  return presets.apply(config, preset, cpu_train=dict(num_steps=600, warmup_steps=60))
