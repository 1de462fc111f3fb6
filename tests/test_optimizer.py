"""The optimizer: what weight decay applies to, and that AdamW applies it only there."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from rmaat_jax import train
from rmaat_jax.models import build_model

TINY = dict(vocab_size=11, num_classes=3, seq_len=16, num_segments=2, emb_dim=16,
            num_heads=2, num_layers=1, mlp_dim=32)


def _params():
  tokens = jnp.ones((1, TINY["seq_len"]), jnp.int32)
  model = build_model(TINY)
  return jax.jit(lambda key: model.init({"params": key}, tokens))(jax.random.key(0))["params"]


def _by_name(tree) -> dict[str, bool]:
  return {jax.tree_util.keystr(path): value
          for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_decay_applies_to_weight_matrices_and_embeddings_only():
  mask = _by_name(train.weight_decay_mask(_params()))
  decayed = {name for name, on in mask.items() if on}
  kept = set(mask) - decayed
  assert any("token_embedding']['embedding" in n for n in decayed)
  assert any("['position_embedding']" in n for n in decayed)
  assert any("mlp_in']['kernel" in n for n in decayed)
  assert any("['head_out']['kernel']" in n for n in decayed)
  assert all(n.endswith(("['kernel']", "['embedding']", "['position_embedding']"))
             for n in decayed)
  for name in ("['memory_init']", "['astro_positions']['e_0']"):
    assert name in kept
  assert any(n.endswith("['bias']") for n in kept)
  assert any("ln_mlp']['scale" in n for n in kept)


def test_adamw_shrinks_only_the_masked_leaves():
  config = default.get_config()
  config.train.weight_decay, config.train.warmup_steps = 0.5, 0
  tx, _ = train.create_optimizer(config.train)
  params = jax.tree_util.tree_map(lambda x: x + 1.0, _params())  # no zero leaves
  zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zero_grads, tx.init(params), params)
  moved = _by_name(jax.tree_util.tree_map(lambda u: bool(jnp.any(u != 0)), updates))
  assert moved == _by_name(train.weight_decay_mask(params))
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["memory_init"], params["memory_init"])
