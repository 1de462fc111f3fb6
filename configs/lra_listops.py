"""LRA ListOps: 2000 tokens padded to 2048 = 4 segments of 512 (METHOD.md section 7).

Vocabulary (DATA.md section 1): pad, unk, digits 0-9, [MIN, [MAX, [MED, [SM and the
closing bracket `]` = 17 ids; 10 classes.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  model = config.model
  model.vocab_size = 17
  model.num_classes = 10
  model.seq_len = 2048
  model.num_segments = 4
  model.emb_dim = 512
  model.num_heads = 8
  model.num_layers = 4
  model.mlp_dim = 1024
  model.pad_id = 0

  config.train.batch_size = 32
  config.train.num_steps = 5000
  config.train.learning_rate = 5e-4
  config.data.dataset = "listops"
  # Offline by default: 96K / 2K / 2K generated trees (DATA.md section 2). With LRA's files:
  # --config.data.generate=False --config.data.manual_dir=/path/to/lra_release/listops-1000
  config.data.generate = True
  return config
