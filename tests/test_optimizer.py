"""The optimizer: what weight decay applies to, and that AdamW applies it only there."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rmaat_jax import train
from rmaat_jax.configs import default
from rmaat_jax.models import build_model

TINY = dict(vocab_size=11, num_classes=3, pad_id=0, dual_encoder=False,
            seq_len=16, num_segments=2, emb_dim=16,
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


def test_warmup_longer_than_the_run_is_scaled_down(caplog):
  config = default.get_config()
  config.train.update(num_steps=200, warmup_steps=1000, learning_rate=1e-3)
  _, schedule = train.create_optimizer(config.train)
  assert [r.getMessage() for r in caplog.records if "warmup" in r.getMessage()] == [
      "train.warmup_steps=1000 is longer than train.num_steps=200; warming up for 20 steps "
      "(10% of the run) instead"]
  np.testing.assert_allclose(schedule(10), 5e-4, rtol=1e-6)  # halfway up
  np.testing.assert_allclose(schedule(20), 1e-3, rtol=1e-6)  # peak at 10 %, then cosine
  assert schedule(21) < 1e-3 and schedule(200) < 1e-6
  config.train.warmup_steps = 150  # within the run: as configured, no warning
  caplog.clear()
  _, schedule = train.create_optimizer(config.train)
  np.testing.assert_allclose(schedule(150), 1e-3, rtol=1e-6)
  assert not caplog.records


def test_eval_step_has_no_collectives():
  """A collective in the eval step can deadlock forced CPU devices (train.evaluate)."""
  from jaxpr_walk import all_eqns

  model = build_model(TINY)
  params = _params()
  batch = {"inputs": jnp.ones((1, 2, TINY["seq_len"]), jnp.int32),
           "targets": jnp.zeros((1, 2), jnp.int32), "weights": jnp.ones((1, 2))}
  stacked = jax.tree_util.tree_map(lambda x: x[None], params)
  collectives = {"all_gather", "psum", "pmax", "pmin", "ppermute", "all_to_all",
                 "reduce_scatter", "psum_scatter"}

  def names(fn, *args):
    return {eqn.primitive.name for eqn in all_eqns(jax.make_jaxpr(fn)(*args).jaxpr)}

  assert not names(train.make_eval_step(model), stacked, batch) & collectives
  config = default.get_config()
  tx, schedule = train.create_optimizer(config.train)
  state = train.train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  rstate = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], state)
  key = jax.random.key(0)[None]
  used = names(train.make_train_step(model, schedule), rstate,
               {k: batch[k] for k in ("inputs", "targets")}, key)
  assert used & collectives  # the walk sees the train step's gradient mean
