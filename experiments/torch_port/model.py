"""A PyTorch port of rmaat_jax's RMAAT classifier, for parity tests and framework benchmarks.

    model = build_torch_model(model_config, jax_params)   # weights copied from Flax
    logits = model(tokens)                                 # [B, num_classes]
    loss = model.loss_and_backward(tokens, labels)         # grads in p.grad
    grads = torch_grads_as_jax_tree(model)                 # nested dict like jax params

Same model as rmaat_jax/models (docs/method.md): embed + learned segment positions, memory
tokens prepended, post-LN encoder blocks with astro / softmax / linear attention, the
astrocytic positional matrix R (projected or distance), retention factors RF(t, T) from
rmaat_jax.models.retention (numpy constants), memory or mean pooling, pool LayerNorm, head
Dense -> GELU(tanh) -> Dense, optional dual encoder ([u, v, u*v, u-v]).

Backprop follows `model_config.backprop`: "bptt" (autograd through all segments), "amrb"
(the paper's replay, recurrent.AMRBFunction, segment by segment or block by
block as `model_config.amrb_replay` says, like JAX) or "remat" (each segment under
torch.utils.checkpoint). All give the same gradients. The module is returned in eval mode,
like JAX's `train=False` default; call `.train()` to enable dropout (its masks come from
torch generators, so they differ from JAX's, but AMRB's replay reproduces them exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.torch_port.layers import (
  AstroPositions,
  Dense,
  Embed,
  EncoderBlock,
  LayerNorm,
  gelu,
)
from experiments.torch_port.recurrent import run_segments
from rmaat_jax.models.config import ModelConfig
from rmaat_jax.models.retention import retention_factors

__all__ = ["RMAATTorch", "build_torch_model", "load_jax_params", "torch_grads_as_jax_tree",
           "torch_params_as_jax_tree"]


class SegmentEncoder(nn.Module):
  """Z_t = encoder(concat(mem_t, embed(x_t) + pos_emb)) for one segment."""

  def __init__(self, cfg: ModelConfig):
    super().__init__()
    self.cfg = cfg
    self.token_embedding = Embed(cfg.vocab_size, cfg.emb_dim)
    self.position_embedding = nn.Parameter(torch.empty(cfg.segment_len, cfg.emb_dim))
    for layer in range(cfg.num_layers):
      self.add_module(f"block_{layer}", EncoderBlock(
          cfg.emb_dim, cfg.num_heads, cfg.mlp_dim, cfg.dropout_rate, cfg.attention,
          cfg.alpha, cfg.hebbian_sigmoid, cfg.block_layout))

  def embed(self, mem: Tensor, tokens: Tensor) -> Tensor:
    """The first block's input [B, M + S, d]: memory, then token + position embeddings."""
    emb = self.token_embedding(tokens) + self.position_embedding
    return torch.cat([mem.to(emb.dtype), emb], dim=1)

  def key_mask(self, mem: Tensor, tokens: Tensor) -> Tensor | None:
    mask = token_mask(tokens, self.cfg.pad_id)
    if mask is None:
      return None
    # Memory tokens are always real.
    return torch.cat([torch.ones(mem.shape[:2], dtype=torch.bool, device=mask.device), mask],
                     dim=1)

  def block(self, layer: int) -> EncoderBlock:
    return getattr(self, f"block_{layer}")

  def forward(self, mem: Tensor, tokens: Tensor, rs: tuple[Tensor, ...] | None,
              generator: torch.Generator | None) -> Tensor:
    x, mask = self.embed(mem, tokens), self.key_mask(mem, tokens)
    for layer in range(self.cfg.num_layers):
      x = self.block(layer)(x, mask, None if rs is None else rs[layer], generator)
    return x


def token_mask(tokens: Tensor, pad_id: int) -> Tensor | None:
  """True for real tokens; None when the task has no pad id (pad_id = -1)."""
  return None if pad_id < 0 else tokens != pad_id


def pool(z: Tensor, cfg: ModelConfig, last_tokens: Tensor) -> Tensor:
  """Z_T [B, M + S, d] -> [B, d]: mean of memory rows, or masked mean of all real rows."""
  m = cfg.num_memory_tokens
  if cfg.pool == "memory":
    return z[:, :m].mean(dim=1)
  mask = token_mask(last_tokens, cfg.pad_id)
  if mask is None:
    return z.mean(dim=1)
  mask = torch.cat([torch.ones(z.shape[0], m, dtype=torch.bool, device=z.device), mask], 1)
  weights = mask.to(z.dtype)[..., None]
  return (z * weights).sum(dim=1) / weights.sum(dim=1)


def _last_real_tokens(segments: Tensor, skip_pad_id: int | None) -> Tensor:
  """Tokens of the segment whose Z is the output: the last one, or with skipping the last
  holding a real token (the first if none does)."""
  if skip_pad_id is None:
    return segments[-1]
  real = (segments != skip_pad_id).any(dim=2)  # [T, B]
  real[0] = True
  last = segments.shape[0] - 1 - real.flip(0).to(torch.int64).argmax(dim=0)
  return segments[last, torch.arange(segments.shape[1], device=segments.device)]


class RMAATTorch(nn.Module):
  """The recurrent memory classifier; parameter paths equal the Flax params tree."""

  def __init__(self, cfg: ModelConfig):
    super().__init__()
    self.cfg = cfg
    if cfg.attention == "astro":
      self.astro_positions = AstroPositions(cfg.num_layers, cfg.num_heads,
                                            cfg.tokens_per_segment, cfg.head_dim,
                                            cfg.position, cfg.position_scale)
    self.segment_encoder = SegmentEncoder(cfg)
    self.memory_init = nn.Parameter(torch.empty(cfg.num_memory_tokens, cfg.emb_dim))
    self.pool_norm = LayerNorm(cfg.emb_dim)
    head_in = 4 * cfg.emb_dim if cfg.dual_encoder else cfg.emb_dim
    self.head_hidden = Dense((head_in,), (cfg.emb_dim,))
    self.head_out = Dense((cfg.emb_dim,), (cfg.num_classes,))
    # RF(t, T): constants from the same numpy code the JAX model uses (no gradient).
    if cfg.retention == "reset":
      raise NotImplementedError("the PyTorch port has no model.retention='reset' (the JAX "
                                "model's memory-cutting control); use another retention")
    self.rf = retention_factors(cfg.num_segments, cfg.retention)

  def _tokens(self, tokens: Tensor | np.ndarray) -> Tensor:
    cfg = self.cfg
    tokens = torch.as_tensor(np.asarray(tokens) if not torch.is_tensor(tokens) else tokens)
    expected = (2, cfg.seq_len) if cfg.dual_encoder else (cfg.seq_len,)
    if tokens.ndim != len(expected) + 1 or tuple(tokens.shape[1:]) != expected:
      raise ValueError(f"tokens have shape {tuple(tokens.shape)}; the model expects "
                       f"[B, {', '.join(map(str, expected))}]")
    if tokens.is_floating_point() or tokens.is_complex():
      raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
      raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}) (model.vocab_size)")
    return tokens.to(device=self.memory_init.device, dtype=torch.long)

  def forward(self, tokens: Tensor | np.ndarray) -> Tensor:
    cfg = self.cfg
    tokens = self._tokens(tokens)
    if cfg.dual_encoder:  # both documents share the encoder: stack them on the batch axis
      tokens = tokens.reshape(2 * tokens.shape[0], cfg.seq_len)  # [u_1, v_1, u_2, ...]
    batch = tokens.shape[0]
    rs = self.astro_positions() if cfg.attention == "astro" else None
    mem0 = self.memory_init.expand(batch, *self.memory_init.shape)
    segments = tokens.reshape(batch, cfg.num_segments, cfg.segment_len).transpose(0, 1)
    seed = None
    if self.training and cfg.dropout_rate > 0:  # one seed per step, folded per segment
      seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    skip_pad_id = cfg.pad_id if cfg.skip_empty_segments and cfg.pad_id >= 0 else None
    z_last = run_segments(self.segment_encoder, list(self.segment_encoder.parameters()),
                          mem0, segments, self.rf, rs, seed, backprop=cfg.backprop,
                          num_memory=cfg.num_memory_tokens, skip_pad_id=skip_pad_id,
                          amrb_replay=cfg.amrb_replay)
    pooled = self.pool_norm(pool(z_last, cfg, _last_real_tokens(segments, skip_pad_id)))
    if cfg.dual_encoder:
      u, v = pooled[0::2], pooled[1::2]
      pooled = torch.cat([u, v, u * v, u - v], dim=-1)
    return self.head_out(gelu(self.head_hidden(pooled)))

  def loss_and_backward(self, tokens: Tensor | np.ndarray,
                        labels: Tensor | np.ndarray) -> Tensor:
    """Mean cross-entropy of the batch; gradients land in `.grad` (accumulated).

    In "amrb" mode the backward is the replay (AMRBFunction); nothing else differs.
    """
    logits = self(tokens)
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    loss = F.cross_entropy(logits, labels.to(device=logits.device, dtype=torch.long))
    loss.backward()
    return loss.detach()


# ----------------------------------------------------------------------------- JAX <-> torch
def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for name, value in tree.items():
    path = f"{prefix}.{name}" if prefix else name
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split(".")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def load_jax_params(module: RMAATTorch, jax_params: Mapping[str, Any]) -> None:
  """Copies a Flax params tree into `module`; every leaf must match by path and shape."""
  flat = {k: np.asarray(v) for k, v in _flatten(jax_params).items()}
  own = dict(module.named_parameters())
  if set(flat) != set(own):
    raise ValueError(f"parameter paths differ: only in JAX {sorted(set(flat) - set(own))}, "
                     f"only in torch {sorted(set(own) - set(flat))}")
  with torch.no_grad():
    for path, param in own.items():
      if tuple(param.shape) != flat[path].shape:
        raise ValueError(f"{path}: torch shape {tuple(param.shape)} != JAX "
                         f"{flat[path].shape}")
      param.copy_(torch.from_numpy(np.array(flat[path])))


def torch_params_as_jax_tree(module: nn.Module) -> dict[str, Any]:
  """Parameters as a nested dict of numpy arrays, keyed like the Flax params tree."""
  return _nest({k: p.detach().cpu().numpy() for k, p in module.named_parameters()})


def torch_grads_as_jax_tree(module: nn.Module) -> dict[str, Any]:
  """`.grad` of every parameter (zeros where None) as a Flax-shaped nested numpy dict."""
  return _nest({k: (np.zeros(tuple(p.shape), np.float64) if p.grad is None
                    else p.grad.detach().cpu().numpy())
                for k, p in module.named_parameters()})


def build_torch_model(model_config: ModelConfig | Mapping[str, Any],
                      jax_params: Mapping[str, Any] | None = None, *,
                      dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> RMAATTorch:
  """The torch twin of `rmaat_jax.models.build_model(model_config)`, in eval mode.

  `jax_params` is `variables["params"]` of the Flax model; without it the weights are
  drawn like Flax's initialisers (for benchmarks that need no parity).
  """
  cfg = (model_config if isinstance(model_config, ModelConfig)
         else ModelConfig.from_config(model_config))
  module = RMAATTorch(cfg)
  if jax_params is None:
    _init_like_flax(module)
  else:
    load_jax_params(module, jax_params)
  return module.to(device=device, dtype=dtype).eval()


def _init_like_flax(module: RMAATTorch) -> None:
  """Flax's defaults: lecun_normal kernels, zero biases, N(0, 1) embeddings, N(0, .02)."""
  cfg = module.cfg
  with torch.no_grad():
    for sub in module.modules():
      if isinstance(sub, Dense):  # lecun_normal: truncated normal, variance 1 / fan_in
        std = 1.0 / np.sqrt(np.prod(sub.kernel.shape[:sub.num_in])) / 0.87962566
        nn.init.trunc_normal_(sub.kernel, std=std, a=-2 * std, b=2 * std)
    for name, param in module.named_parameters():
      leaf = name.rsplit(".", 1)[-1]
      if leaf == "embedding":
        nn.init.normal_(param, std=1.0)
      elif leaf in ("position_embedding", "memory_init"):
        nn.init.normal_(param, std=0.02)
      elif leaf.startswith("e_"):
        nn.init.normal_(param, std=1.0 / np.sqrt(cfg.tokens_per_segment))
