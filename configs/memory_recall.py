"""Memory recall (generated): T segments of 64 tokens, a key -> value pair in segment 1, the
query at the end of the last segment; the model must carry the value across T - 1 segment
boundaries (docs/data.md section 6).
Presets (`:rmt`, `:rlt`, `:cpu`): rmaat_jax/configs/presets.py.

What carries memory (experiments/RESULTS.md, the memory benchmark): this config uses pre-LN
blocks and no retention factor. With the paper's factor (`--config.model.retention=paper`,
the LRA configs' default) the memory leaving segment t is scaled by RF(t, T), which falls
like 0.607^t, and a fact no longer crosses 8 segments; `:rmaat` here therefore means astro
attention and AMRB with `retention="none"`.

    python -m rmaat_jax.main --config configs/memory_recall.py:cpu --workdir /tmp/recall
"""

import ml_collections

from rmaat_jax.configs import default, presets

NUM_SEGMENTS = 8


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """`preset`: what follows the colon in --config configs/memory_recall.py:rmt,cpu."""
  config = default.get_config()
  model = config.model
  model.num_segments = NUM_SEGMENTS
  model.emb_dim = 128
  model.num_heads = 4
  model.num_layers = 2
  model.mlp_dim = 256
  model.block_layout = "pre_ln"
  config.train.batch_size = 32
  config.train.num_steps = 5_000
  config.train.warmup_steps = 500
  config.train.learning_rate = 1e-3
  config.data.dataset = "recall"
  config.data.generate = True
  config.data.generate_sizes = (20_000, 1_000, 1_000)
  config.data.recall.num_segments = NUM_SEGMENTS
  model_preset, cpu = presets.parse(preset)
  # :cpu: the shared small model at 4 segments (256 tokens), about a minute on 2 CPU cores.
  config = presets.apply(config, preset, cpu_train=dict(num_steps=600, warmup_steps=60))
  if cpu:
    model.num_segments = config.data.recall.num_segments = 4
  if model_preset == "rmaat":
    model.retention = "none"
  return config
