"""Defaults shared by every task config (`get_config()` returns an ml_collections ConfigDict).

Task configs (the repository's configs/lra_*.py, configs/memory_recall.py) start from this
and override what differs. Field names in `model`, `train` and `data` are a contract with
the trainer and outside checks.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.model = model = ml_collections.ConfigDict()
  # vocab_size, num_classes, pad_id and dual_encoder come from the dataset (data.dataset;
  # rmaat_jax/data/tasks.py), not from the config.
  model.seq_len = 0  # 0: the dataset's length; text-like tasks may pad/truncate to another
  model.num_segments = 4  # segment length = seq_len / num_segments
  model.num_memory_tokens = 1
  model.emb_dim = 128
  model.num_heads = 4
  model.num_layers = 2
  model.mlp_dim = 256
  model.dropout_rate = 0.1
  # Dropout masks' random bits: "rbg" (XLA's RngBitGenerator: one buffer per mask, the
  # least memory; slow on CPU) | "threefry" (JAX's default) | "auto" (threefry on CPU,
  # rbg on GPU/TPU). docs/method.md section 5.
  model.dropout_rng = "auto"
  model.attention = "astro"  # "astro" (RMAAT) | "softmax" (RMT) | "linear" (RLT)
  model.position = "projected"  # "projected" | "distance"
  model.position_scale = 2.0
  model.alpha = 0.25
  model.hebbian_sigmoid = False
  # Encoder block: "post_ln" (Y = LN(X + Attn(X)), Z = LN(Y + FFN(Y)); the layout of the
  # paper's predecessor) | "pre_ln" (Y = X + Attn(LN(X)), Z = Y + FFN(LN(Y))). The paper does
  # not say which it uses; docs/method.md section 2 and the memory benchmark compare them.
  model.block_layout = "post_ln"
  # "paper" (segment t = STP cycle t) | "stretched" (T segments over 6 cycles) |
  # "streaming" (unnormalised, T not needed in advance) | "none" (RF = 1) | "reset" (every
  # segment starts from the learned initial memory: a control in which nothing crosses
  # segments)
  model.retention = "paper"
  # A diagnostic, not a training choice: "exact" (the default) backpropagates through the
  # retention factors of model.retention; a mode name makes the backward scale dL/dmem by
  # that mode's factors instead, so the gradient is no longer the loss's (the memory
  # benchmark uses it to find out why "paper" loses the memory: docs/method.md 4.3).
  model.retention_backward = "exact"
  model.backprop = "amrb"  # "amrb" | "remat" | "bptt"
  # AMRB's replay of a segment: "block" (one block at a time: one layer's activations live,
  # one extra forward of L - 1 blocks) | "segment" (the paper's: all layers' at once)
  model.amrb_replay = "block"
  model.pool = "memory"  # "memory" | "mean"
  # Per example, a segment of padding only leaves the memory unchanged (no RF) and the head
  # reads the last segment holding a real token.
  model.skip_empty_segments = False

  config.train = train = ml_collections.ConfigDict()
  train.num_steps = 10_000
  train.batch_size = 32  # global, split over all devices
  train.eval_every = 500
  train.checkpoint_every = 500
  train.num_eval_batches = 50
  train.learning_rate = 1e-3
  train.warmup_steps = 1000
  train.weight_decay = 1e-2
  train.seed = 0
  train.log_every = 50
  train.keep_checkpoints = 3
  train.grad_clip = 1.0  # global norm; 0 disables
  train.compute_dtype = "float32"  # or "bfloat16" (float32 master weights)
  # Memory one device may use (GiB); 0: what the device reports (GPU) or the free RAM (CPU).
  # A train step that needs more stops before the first step, suggesting backprop="amrb".
  train.memory_limit_gib = 0.0

  config.data = data = ml_collections.ConfigDict()
  # listops | text | retrieval | image | pathfinder | fashion_mnist (offline Image substitute)
  data.dataset = ""
  data.data_dir = ""  # TFDS data dir; empty: the TFDS default (~/tensorflow_datasets)
  # cifar10 / imdb_reviews: TFDS downloads them when they are not prepared in data_dir
  # (offline the run stops at once and says what to do). False: never use the network.
  data.download = True
  # Folder with LRA's release files for listops / retrieval / pathfinder (e.g.
  # lra_release/listops-1000); empty: <data_dir>/downloads/manual.
  data.manual_dir = ""
  # ListOps and Pathfinder only: generate the data with rmaat_jax.data.{listops,pathfinder}
  # instead of reading LRA's files (cached under <data_dir>/generated/).
  data.generate = False
  data.generate_sizes = (96_000, 2_000, 2_000)  # train, validation, test
  data.generate_seed = 0
  data.generate_workers = 1  # Pathfinder generator processes
  data.pathfinder_difficulty = "hard"  # generated Pathfinder: easy | intermediate | hard
  # The recall task (data.dataset="recall", always generated; docs/data.md section 6): T
  # segments of S tokens, num_pairs key -> value pairs in segment 1, the query at the end.
  # model.num_segments must equal recall.num_segments.
  data.recall = recall = ml_collections.ConfigDict()
  recall.num_segments = 4
  recall.segment_len = 64
  recall.num_pairs = 1
  recall.num_keys = 16
  recall.num_values = 10  # the classes: chance = 1 / num_values
  data.num_workers = 0  # grain worker processes (0: read in the main process)

  # Multi-host training: enabled=True calls jax.distributed.initialize() (no address:
  # auto-detection under SLURM / cloud TPU; else coordinator_address, num_processes,
  # process_id).
  config.distributed = dist = ml_collections.ConfigDict()
  dist.enabled = False
  dist.coordinator_address = ""
  dist.num_processes = 1
  dist.process_id = 0
  return config
