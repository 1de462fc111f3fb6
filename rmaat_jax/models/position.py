"""The astrocyte's spatial term: positional matrices R [H, N, m] (docs/method.md section 3).

R depends only on positions and parameters, never on content, so the model computes it
once per layer per training step (`AstroPositions`), outside the scan over segments, and
passes it into every segment.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _unit_grid(n: int) -> np.ndarray:
  """n points evenly spaced on [0, 1] (a single point sits at 0)."""
  return np.arange(n) / max(n - 1, 1)


def distance_kernel(num_tokens: int, scale: float) -> np.ndarray:
  """P_pos[i, j] = exp(-scale |p_i - p_j|) with p_i = i / (N - 1): [N, N], no batch."""
  p = _unit_grid(num_tokens)
  return np.exp(-scale * np.abs(p[:, None] - p[None, :]))


def distance_positions(num_heads: int, num_tokens: int, head_dim: int,
                       scale: float) -> Array:
  """Parameter-free R[i, j] = exp(-scale |p_i - c_j|), c_j = j / (m - 1): [H, N, m]."""
  p, c = _unit_grid(num_tokens), _unit_grid(head_dim)
  r = np.exp(-scale * np.abs(p[:, None] - c[None, :]))
  return jnp.asarray(np.broadcast_to(r, (num_heads, num_tokens, head_dim)), jnp.float32)


def projected_positions(e: Array, scale: float) -> Array:
  """Learned R = E^T (E P_pos E^T) per head, from E [H, m, N]: returns [H, N, m]."""
  kernel = jnp.asarray(distance_kernel(e.shape[-1], scale), e.dtype)
  gram = jnp.einsum("hmn,nk,hjk->hmj", e, kernel, e)  # E P E^T: [H, m, m]
  return jnp.einsum("hmn,hmj->hnj", e, gram)


class AstroPositions(nn.Module):
  """One R per encoder layer: learned ("projected") or fixed ("distance")."""

  num_layers: int
  num_heads: int
  num_tokens: int
  head_dim: int
  kind: str = "projected"
  scale: float = 2.0

  @nn.compact
  def __call__(self) -> tuple[Array, ...]:
    if self.kind == "distance":
      r = distance_positions(self.num_heads, self.num_tokens, self.head_dim, self.scale)
      return (r,) * self.num_layers
    init = nn.initializers.normal(stddev=1.0 / np.sqrt(self.num_tokens))
    shape = (self.num_heads, self.head_dim, self.num_tokens)
    return tuple(
        projected_positions(self.param(f"e_{layer}", init, shape), self.scale)
        for layer in range(self.num_layers))
