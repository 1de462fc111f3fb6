"""LRA preprocessing conventions (docs/data.md section 2), as pure numpy functions.

Shared by the TFDS builders (which store token ids) and the grain transforms (which turn
catalog images and texts into token ids), so that every task sees one definition. The
`*_rows` / `*_batch` functions do the same for a whole batch at once, into one int32 array
(the input pipeline's batches); tests check them against the per-example functions.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def pad_rows(rows: Sequence[np.ndarray], length: int, pad_id: int = 0,
             out: np.ndarray | None = None) -> np.ndarray:
  """pad_to for a batch: each 1-D id array truncated or right-padded to `length`, as the
  rows of one int32 [len(rows), length] array (`out` if given)."""
  if out is None:
    out = np.empty((len(rows), length), np.int32)
  out.fill(pad_id)
  for row, ids in zip(out, rows, strict=True):
    n = min(length, ids.shape[0])
    row[:n] = ids[:n]
  return out


def byte_rows(texts: Sequence[str | bytes], max_len: int, length: int,
              out: np.ndarray | None = None) -> np.ndarray:
  """byte_ids then pad_to (0 = pad) for a batch: int32 [len(texts), length] (`out` if
  given)."""
  if out is None:
    out = np.empty((len(texts), length), np.int32)
  out.fill(0)
  limit = min(max_len, length)
  for row, text in zip(out, texts, strict=True):
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    n = min(limit, len(data))
    row[:n] = np.frombuffer(data, np.uint8, n)
    row[:n] += 1  # in int32: 255 + 1 must not wrap as it would in uint8
  return out


def grayscale_batch(images: np.ndarray) -> np.ndarray:
  """grayscale_pixels for a batch: [B, H, W, 3], [B, H, W, 1] or [B, H, W] uint8 ->
  int32 [B, H * W]. The same float64 matmul per pixel, so the same ids bit for bit."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 3:
    gray = np.rint(images.astype(np.float64) @ GRAY_WEIGHTS)
  elif images.ndim == 4 and images.shape[-1] == 1:
    gray = images[..., 0]
  elif images.ndim == 3:
    gray = images
  else:
    raise ValueError(f"expected [B, H, W], [B, H, W, 1] or [B, H, W, 3] images, got "
                     f"{images.shape}")
  return np.clip(gray, 0, 255).astype(np.int32).reshape(images.shape[0], -1)


def grayscale_pixels(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] or [H, W(, 1)] uint8 -> raster-order int32 ids 0-255 (H * W of them)."""
  image = np.asarray(image)
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3))):
    raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got {image.shape}")
  return grayscale_batch(image[None])[0]


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads an [H, W] image symmetrically to [size, size] (Fashion-MNIST 28 -> 32)."""
  h, w = image.shape[:2]
  if h > size or w > size:
    raise ValueError(f"image {h}x{w} is larger than {size}x{size}")
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((size, size) + image.shape[2:], image.dtype)
  out[top:top + h, left:left + w] = image
  return out
