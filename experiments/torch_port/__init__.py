"""The PyTorch port of the RMAAT classifier (model, layers, recurrent AMRB backprop) and its
training-memory meters; importing it imports torch. Entry point: `build_torch_model`."""

from experiments.torch_port.model import (
  RMAATTorch,
  build_torch_model,
  load_jax_params,
  torch_grads_as_jax_tree,
  torch_params_as_jax_tree,
)

__all__ = ["RMAATTorch", "build_torch_model", "load_jax_params", "torch_grads_as_jax_tree",
           "torch_params_as_jax_tree"]
