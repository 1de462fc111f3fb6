"""LRA Text (IMDb, byte level): 4096 bytes = 8 segments of 512 (METHOD.md section 7).

Needs TFDS `imdb_reviews`: run once with --config.data.download=True (internet).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  model = config.model
  model.vocab_size = 257  # byte + 1, 0 = pad
  model.num_classes = 2
  model.seq_len = 4096
  model.num_segments = 8
  model.emb_dim = 256
  model.num_heads = 4
  model.num_layers = 4
  model.mlp_dim = 1024
  config.train.batch_size = 32
  config.train.num_steps = 20_000
  config.train.learning_rate = 5e-4
  config.data.dataset = "text"
  return config
