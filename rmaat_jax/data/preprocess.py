"""LRA preprocessing conventions (docs/data.md section 2), as pure numpy functions.

Shared by the TFDS builders (which store token ids) and the grain transforms (which turn
catalog images and texts into token ids), so that every task sees one definition.
"""

from __future__ import annotations

import numpy as np

# ITU-R 601 luma weights, as LRA's image tasks use.
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])
BYTE_VOCAB_SIZE = 257  # id = byte + 1; 0 is padding
PIXEL_VOCAB_SIZE = 256  # ids are the pixel values; no padding id


def byte_ids(text: str | bytes, max_len: int) -> np.ndarray:
  """UTF-8 bytes -> ids byte + 1 (0 = pad), truncated to max_len (not padded)."""
  data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  return np.frombuffer(data[:max_len], np.uint8).astype(np.int32) + 1


def pad_to(ids: np.ndarray, length: int, pad_id: int = 0) -> np.ndarray:
  """Truncates or right-pads a 1-D id array to `length`."""
  out = np.full((length,), pad_id, np.int32)
  n = min(length, ids.shape[0])
  out[:n] = ids[:n]
  return out


def grayscale_pixels(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] or [H, W(, 1)] uint8 -> raster-order int32 ids 0-255 (H * W of them)."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 3:
    gray = np.rint(image.astype(np.float64) @ GRAY_WEIGHTS)
  elif image.ndim == 3 and image.shape[-1] == 1:
    gray = image[..., 0]
  elif image.ndim == 2:
    gray = image
  else:
    raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got {image.shape}")
  return np.clip(gray, 0, 255).astype(np.int32).reshape(-1)


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads an [H, W] image symmetrically to [size, size] (Fashion-MNIST 28 -> 32)."""
  h, w = image.shape[:2]
  if h > size or w > size:
    raise ValueError(f"image {h}x{w} is larger than {size}x{size}")
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((size, size) + image.shape[2:], image.dtype)
  out[top:top + h, left:left + w] = image
  return out
