"""The original Pathfinder generator, emulated: what image statistics does it give at LRA's
Pathfinder32 arguments? (docs/data.md section 4.4; RESULTS.md's generator statistics.)

    python -m experiments.data_checks.pathfinder_reference [--difficulty hard] [--num 200]
        [--seed 0] [--dilate_border opencv|free] [--json FILE]
    PYTHONPATH=<opencv> python -m experiments.data_checks.pathfinder_reference --check_opencv

A small, literal re-implementation of `snakes2.py` / `snakes.py` (github.com/drewlinsley/
pathfinder, Linsley et al. 2018; the generator LRA used), one image and one attempt at a time
in the original's order of operations and random draws (numpy's legacy global stream, here a
seeded `RandomState`), at the arguments docs/data.md section 4 gives for LRA's Pathfinder32:
32 x 32 window, padding 1, antialias scale 2, seed distance 7, marker radius 1.5, paddle
length 2, thickness 0.5, margin 1, continuity 1.0, snake contrasts [2.0], paddle contrasts
[0.75], 3 paddle and 5 distractor-contour tries, contour length 6 / 9 / 14, distractors of
L // 3 paddles, 20 // (L // 3) of them, no single-paddle distractors. It shares no code with
rmaat_jax/data/pathfinder.py and has none of that generator's deviations (docs/data.md 4.2).

Two library calls of the original no longer exist or are not installed here; both are
emulated with numpy / PIL:

- `scipy.misc.imresize(a, shape, interp='lanczos')` (removed in SciPy 1.3): a non-uint8
  array is first min-max scaled to uint8 as `scipy.misc.bytescale` did ((a - min) * 255 /
  (max - min), + 0.5, truncated), then resized by PIL with filter 1 (LANCZOS); a uint8 array
  is resized as is. `scipy.misc.imsave` = the same bytescale (the PNG the original writes).
- `cv2.dilate(src, kernel)`: the maximum of src over the kernel's non-zero cells, the kernel
  anchored at its centre (cell (k // 2, k // 2)); cells falling outside the image take
  OpenCV's default border value for dilation, the dtype's lowest finite value (-DBL_MAX for
  the original's float64 masks), so they never win the maximum, and a pixel all of whose
  cells fall outside keeps that value. (`--check_opencv` compares it with OpenCV itself;
  with opencv-python-headless 5.1.0: identical on 2961 random cases.)

That last case decides the statistics. A seed's structuring element (the paddle's
full-occupancy cells, head-centric in a 7 x 7 window) has 1-4 cells; for most orientations
they all lie below or right of the anchor, so the last row or column of the dilated mask is
left at -DBL_MAX, and the original's `find_available_coordinates` returns no pixel at all when
its input has a negative value (`if np.min(mask) < 0`). So a seed succeeds only at the 30
orientations -150..-121 degrees: about 1 in 12 seed draws, of target pairs and distractors
alike. `--dilate_border free` reads those pixels as free instead (an earlier emulation's
reading, which rmaat_jax/data/pathfinder.py follows); the statistics then move to ours.

Only the statistics are computed (no PNG is written; the image is the uint8 array the PNG
would hold). Prints: mean pixel, share of non-zero pixels, images reaching 255, label 1
share, distractor contours placed per image (of 20 // (L // 3)), and the pair attempts
(success rate; where failed attempts died). Single-threaded: about 0.1 s per hard image
(the paddle windows are cached per orientation; the original re-renders them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import json
import pathlib
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw

CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}


@dataclasses.dataclass(frozen=True)
class Args:
  """snakes2.from_wrapper's arguments for LRA's Pathfinder32 (docs/data.md section 4)."""

  contour_length: int = 14
  window: int = 32
  padding: int = 1
  aa: int = 2  # antialias_scale
  seed_distance: int = 7
  marker_radius: float = 1.5
  paddle_length: int = 2
  thickness: float = 0.5
  margin: int = 1  # paddle_margin_list = [1]
  continuity: float = 1.0
  snake_contrasts: tuple[float, ...] = (2.0,)
  paddle_contrasts: tuple[float, ...] = (0.75,)
  max_paddle_retrial: int = 2
  max_distractor_contour_retrial: int = 4
  # Not an argument of the original: False replaces what cv2.dilate leaves at its border
  # value by 0 (a free pixel), the reading an earlier emulation made (see the docstring).
  opencv_border: bool = True

  @property
  def distractor_length(self) -> int:
    return self.contour_length // 3

  @property
  def num_distractors(self) -> int:
    return 20 // self.distractor_length


# --- the library calls, emulated ----------------------------------------------------------

def bytescale(a: np.ndarray) -> np.ndarray:
  """scipy.misc.bytescale(a) with its defaults (cmin = min, cmax = max, 0..255)."""
  if a.dtype == np.uint8:
    return a
  lo, hi = float(a.min()), float(a.max())
  scale = 255.0 / ((hi - lo) or 1.0)
  return (((a - lo) * scale).clip(0, 255) + 0.5).astype(np.uint8)


def imresize_lanczos(a: np.ndarray, size: int) -> np.ndarray:
  """scipy.misc.imresize(a, (size, size), interp='lanczos') of a 2-D array -> uint8."""
  return np.asarray(Image.fromarray(bytescale(a), "L").resize((size, size), resample=1))


def cv2_dilate(src: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """cv2.dilate(src, kernel) of a float array with the default anchor and border value: see
  the module docstring. A pixel all of whose kernel cells fall outside the image gets the
  lowest finite value of the dtype (OpenCV's border value for dilation, -DBL_MAX for
  float64, -FLT_MAX for float32)."""
  kh, kw = kernel.shape
  ay, ax = kh // 2, kw // 2
  h, w = src.shape
  low = np.finfo(src.dtype).min
  padded = np.full((h + kh - 1, w + kw - 1), low, src.dtype)
  padded[ay:ay + h, ax:ax + w] = src
  out = np.full((h, w), low, src.dtype)
  for i, j in zip(*np.nonzero(kernel), strict=True):
    out = np.maximum(out, padded[i:i + h, j:j + w])
  return out


# --- snakes.py's helpers ------------------------------------------------------------------

def disc_struct(radius: int) -> np.ndarray:
  """generate_dilation_struct: a (2r + 1)^2 disc x^2 + y^2 <= r^2."""
  y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
  return (x ** 2 + y ** 2 <= radius ** 2).astype(np.float64)


def translate(coord, orientation: float, dist: float) -> list[int]:
  """translate_coord: moved by dist along orientation, each coordinate rounded up."""
  return [int(np.ceil(coord[0] + float(dist) * np.sin(orientation))),
          int(np.ceil(coord[1] + float(dist) * np.cos(orientation)))]


def flip_by_pi(orientation: float) -> float:
  return orientation + np.pi if orientation < 0 else orientation - np.pi


class Renderer:
  """draw_line_n_mask and draw_circle. A paddle's pixels depend on its orientation alone,
  so each orientation's line and mask windows are rendered once and cached."""

  def __init__(self, args: Args):
    self.args = args
    self.reach = args.paddle_length + int(np.ceil(args.thickness)) + args.margin
    self.large_struct = disc_struct(args.margin * args.aa)
    if np.round(args.thickness * args.aa) != args.thickness * args.aa:
      raise ValueError("thickness does not break even")

  @functools.cache  # noqa: B019 -- one renderer per run
  def windows(self, orientation: float) -> tuple[np.ndarray, np.ndarray]:
    """(line, mask), float64 [w, w] in [0, 1], w = 2 * reach + 1, the start pixel central."""
    a = self.args
    blown = 2 * self.reach * a.aa + 1
    c = self.reach * a.aa
    head = translate([c, c], orientation, a.paddle_length * a.aa)
    image = Image.new("F", (blown, blown), "black")
    ImageDraw.Draw(image).line([(c, c), (head[1], head[0])], fill="white",
                               width=int(np.round(a.thickness * a.aa)))
    line = np.array(image)
    size = 2 * self.reach + 1
    line_small = imresize_lanczos(line, size).astype(np.float64) / 255
    mask_blown = cv2_dilate(line, self.large_struct).astype(np.float64).astype(np.uint8)
    mask_small = imresize_lanczos(mask_blown, size).astype(np.float64) / 255
    return line_small, mask_small

  def line_and_mask(self, shape, start, orientation: float, contrast: float = 1.0):
    """draw_line_n_mask: float32 images of `shape` with the paddle's line (times contrast)
    and its margin mask placed with their window's centre on `start`, clipped to the image."""
    line, mask = self.windows(float(orientation))
    if contrast != 1.0:
      line = line * contrast
    r, size = self.reach, 2 * self.reach + 1
    l_im = np.zeros(shape, np.float32)
    m_im = np.zeros(shape, np.float32)
    y0, y1 = start[0] - r, start[0] + r
    x0, x1 = start[1] - r, start[1] + r
    ys = slice(max(y0, 0), min(y1, shape[0] - 1) + 1)
    xs = slice(max(x0, 0), min(x1, shape[1] - 1) + 1)
    wy = slice(max(0, -y0), size - max(0, y1 - (shape[0] - 1)))
    wx = slice(max(0, -x0), size - max(0, x1 - (shape[1] - 1)))
    l_im[ys, xs] = line[wy, wx]
    m_im[ys, xs] = mask[wy, wx]
    return l_im, m_im

  def circle(self, centre) -> np.ndarray:
    """snakes2.draw_circle: a disc drawn at aa x and LANCZOS-shrunk -> uint8 image."""
    a = self.args
    n = a.window
    y, x = np.ogrid[-centre[0] * a.aa:(n - centre[0]) * a.aa,
                    -centre[1] * a.aa:(n - centre[1]) * a.aa]
    image = np.zeros((n * a.aa, n * a.aa))
    image[x ** 2 + y ** 2 <= (a.marker_radius * a.aa) ** 2] = 1
    return imresize_lanczos(image, n)


def available(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """find_available_coordinates(np.ceil(mask - 0.3), margin=0): the pixels with mask <= 0.3,
  and none at all if any value is negative (the original's `if np.min(mask) < 0` branch,
  taken whenever cv2.dilate left its border value somewhere)."""
  rounded = np.ceil(mask - 0.3)
  if np.min(rounded) < 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.nonzero(1 - rounded.astype(np.uint8))


def in_window(p, shape) -> bool:
  return 0 <= p[0] < shape[0] and 0 <= p[1] < shape[1]


class Generator:
  """snakes2.from_wrapper's image loop; the methods follow the original's functions."""

  def __init__(self, args: Args, rng: np.random.RandomState):
    self.a, self.rng = args, rng
    self.draw = Renderer(args)
    self.small_struct = disc_struct(args.margin)
    self.shape = (args.window, args.window)
    self.pair_outcomes = collections.Counter()  # "ok", "seed", "step k"

  def _contrast_draw(self, contrasts) -> float:
    # The original draws an index even from a one-element list (one randint per paddle).
    return contrasts[self.rng.randint(low=0, high=len(contrasts))] if contrasts else 1.0

  def _seed_struct(self, orientation: float) -> np.ndarray:
    """The head-centric structuring element: the paddle mask in a (2(l + m) + 1)^2 window
    started at cell (l + m + 1, l + m + 1), cast to uint8 (only full cells remain)."""
    a = self.a
    n = (a.paddle_length + a.margin) * 2 + 1
    head = a.paddle_length + a.margin + 1
    _, struct = self.draw.line_and_mask((n, n), [head, head], orientation)
    return struct.astype(np.uint8)

  def _seed_dilate(self, lined: np.ndarray, orientation: float) -> np.ndarray:
    dilated = cv2_dilate(lined, self._seed_struct(orientation)).astype(float)
    return dilated if self.a.opencv_border else np.maximum(dilated, 0)

  def _sample_orientation(self) -> tuple[float, float]:
    o = self.rng.randint(low=-180, high=180) * np.pi / 180
    return o, (o + np.pi if o + np.pi < np.pi else o - np.pi)

  def seed_snake(self, image, mask, contrast, stop_with_availability):
    """snakes.seed_snake -> image, segment mask, pivot, orientation, success."""
    a = self.a
    length = a.paddle_length
    trial = 0
    while trial <= a.max_paddle_retrial:
      o, reverse = self._sample_orientation()
      lined = mask.copy()
      lined[0, :] = lined[-1, :] = 1
      lined[:, 0] = lined[:, -1] = 1
      dilated = self._seed_dilate(lined, o)
      raw = available(mask)[0].size
      coords = available(dilated)
      if stop_with_availability is not None and raw / mask.size < stop_with_availability:
        return image, None, None, None, False
      if coords[0].size == 0:
        return image, None, None, None, False
      k = self.rng.randint(low=0, high=coords[0].size)
      tail = [coords[0][k], coords[1][k]]
      head = translate(tail, o, length)
      pivot = translate(head, reverse, length + a.margin)
      if not (in_window(head, mask.shape) and in_window(pivot, mask.shape)):
        trial += 1
        continue
      break
    if trial > a.max_paddle_retrial:
      return image, None, None, None, False
    l_im, m_im = self.draw.line_and_mask(mask.shape, tail, o, contrast)
    return np.maximum(image, l_im), m_im, pivot, o, True

  def coords_cmf(self, pivot, orientation, mask):
    """snakes.get_coords_cmf -> candidate heads, their orientations, CMF (or Nones)."""
    a = self.a
    step = a.paddle_length + a.margin
    h, w = mask.shape
    rad = np.arange(0, 360, 360.0 / (2 * step * np.pi)) * np.pi / 180
    ys = pivot[0] + step * np.sin(rad)
    xs = pivot[1] + step * np.cos(rad)
    coords = np.stack([ys, xs], 1).astype(int)  # truncation, as .astype(int)
    coords = coords[~((ys >= h) | (ys < 0) | (xs >= w) | (xs < 0))]
    if coords.shape[0] == 0:
      return None, None, None
    coords = np.unique(coords, axis=0)
    d = coords - np.asarray(pivot)
    orient = np.arctan2(d[:, 0], d[:, 1])
    delta = np.minimum(np.abs(orient - orientation), 2 * np.pi - np.abs(orient - orientation))
    delta = np.minimum(delta * a.continuity, 0.5 * np.pi)
    pmf = (1 - mask[coords[:, 0], coords[:, 1]]) * np.maximum(np.cos(delta), 0) ** 2
    total = np.sum(pmf)
    if total < 1e-4:
      return None, None, None
    return coords, orient, np.cumsum(pmf / total)

  def extend_snake(self, last_pivot, last_orientation, last_segment_mask, image, mask,
                   contrast):
    """snakes.extend_snake -> image, mask, segment mask, pivot, orientation, head, success."""
    a = self.a
    pivot = translate(last_pivot, last_orientation, a.paddle_length + 2 * a.margin)
    dilated = cv2_dilate(mask, self.small_struct).astype(float)
    coords, orient, cmf = self.coords_cmf(pivot, last_orientation, dilated)
    if cmf is None:
      return image, mask, None, None, None, None, False
    for _ in range(a.max_paddle_retrial + 1):
      index = int(np.argmax(cmf - self.rng.rand() > 0))
      head = coords[index]
      l_im, m_im = self.draw.line_and_mask(mask.shape, head, flip_by_pi(orient[index]),
                                           contrast)
      if np.max(mask + m_im) < 1.8:
        return (np.maximum(image, l_im), np.maximum(mask, last_segment_mask), m_im, pivot,
                orient[index], [int(head[0]), int(head[1])], True)
    return image, mask, None, None, None, None, False

  def make_snake(self, image, mask, num_segments, contrasts, stop_with_availability):
    """snakes.make_snake: a seed and num_segments - 1 extensions, or the inputs unchanged."""
    contrast = self._contrast_draw(contrasts)
    cur_image, segment, pivot, o, ok = self.seed_snake(image, mask, contrast,
                                                       stop_with_availability)
    if not ok:
      return image, mask, False
    cur_mask = mask.copy()
    for _ in range(num_segments - 1):
      contrast = self._contrast_draw(contrasts)
      cur_image, cur_mask, segment, pivot, o, _, ok = self.extend_snake(
          list(pivot), o, segment, cur_image, cur_mask, contrast)
      if not ok:
        return image, mask, False
    return cur_image, np.maximum(cur_mask, segment), True

  def distractors(self, image, mask) -> tuple[np.ndarray, np.ndarray, int]:
    """snakes.make_many_snakes with allow_incomplete=True, stop_with_availability=0.01."""
    a = self.a
    placed = 0
    for _ in range(a.num_distractors):
      for _ in range(a.max_distractor_contour_retrial + 1):
        image, mask, ok = self.make_snake(image, mask, a.distractor_length,
                                          list(a.snake_contrasts), 0.01)
        if ok:
          placed += 1
          break
    return image, mask, placed

  def two_seeds(self, contrast_mu):
    """snakes2.initialize_two_seeds -> images, mask, segment masks, pivots, orientations,
    tips, success."""
    a = self.a
    n = a.window
    length = a.paddle_length
    mask = np.zeros(self.shape)
    p = a.padding
    mask[:p, :] = mask[-p:, :] = 1
    mask[:, :p] = mask[:, -p:] = 1
    out = []
    for i in range(2):
      # Here the original draws an index only from a list of two or more contrasts.
      pc = a.paddle_contrasts
      index = self.rng.randint(low=0, high=len(pc)) if len(pc) > 1 else 0
      contrast = pc[index] * contrast_mu[i]
      trial = 0
      while trial <= a.max_paddle_retrial:
        o, reverse = self._sample_orientation()
        if i == 0:
          lined = mask.copy()
          s = 2 * a.seed_distance
          lined[:s, :] = lined[n - s:, :] = 1
          lined[:, :s] = lined[:, n - s:] = 1
          dilated = self._seed_dilate(lined, o)
          coords = available(dilated)
          if coords[0].size == 0:
            return None
          k = self.rng.randint(low=0, high=coords[0].size)
          tail = [coords[0][k], coords[1][k]]
        else:
          t = self.rng.randint(0, 360) * np.pi / 180
          first = out[0][4]
          tail = [int(np.round(first[0] + a.seed_distance * np.sin(t))),
                  int(np.round(first[1] + a.seed_distance * np.cos(t)))]
        head = translate(tail, o, length)
        pivot = translate(head, reverse, length + a.margin)
        if not (in_window(head, mask.shape) and in_window(pivot, mask.shape)):
          trial += 1
          continue
        break
      if trial > a.max_paddle_retrial:
        return None
      l_im, m_im = self.draw.line_and_mask(mask.shape, tail, o, contrast)
      out.append((np.maximum(np.zeros(self.shape), l_im), m_im, pivot, o, list(tail)))
    return mask, out

  def two_snakes(self):
    """snakes2.two_snakes -> (images, mask, origin tips, terminal tips) or None."""
    a = self.a
    contrast_mu = (list(a.snake_contrasts) * 2)[:2]  # shuffled in the original: all equal
    seeded = self.two_seeds(contrast_mu)
    if seeded is None:
      self.pair_outcomes["seed"] += 1
      return None
    mask, seeds = seeded
    images = [s[0] for s in seeds]
    segments = [s[1] for s in seeds]
    pivots = [s[2] for s in seeds]
    orients = [s[3] for s in seeds]
    origins = [s[4] for s in seeds]
    terminals = [[0, 0], [0, 0]]
    for step in range(1, a.contour_length):
      contrast = self._contrast_draw(list(a.paddle_contrasts))
      for s in range(2):
        images[s], mask, segments[s], pivots[s], orients[s], terminals[s], ok = \
            self.extend_snake(list(pivots[s]), orients[s], segments[s], images[s], mask,
                              contrast * contrast_mu[s])
        if not ok:
          self.pair_outcomes[f"step {step}"] += 1
          return None
    self.pair_outcomes["ok"] += 1
    # As the original: only the second contour's last paddle joins the mask.
    return images, np.maximum(mask, segments[-1]), origins, terminals

  def image(self) -> tuple[np.ndarray, int, int]:
    """One image of snakes2.from_wrapper -> (uint8 image as imsave writes it, label,
    distractors placed)."""
    label = self.rng.randint(low=0, high=2)
    self.rng.randint(low=0, high=1)  # the paddle margin drawn from a one-element list
    pair = None
    while pair is None:
      pair = self.two_snakes()
    images, mask, origins, terminals = pair
    image = np.maximum(images[0], images[1])
    image, mask, placed = self.distractors(image, mask)
    origin = self.rng.randint(0, 2)
    terminal = origin if label == 1 else 1 - origin
    markers = np.maximum(self.draw.circle(origins[origin]),
                         self.draw.circle(terminals[terminal])).astype(np.float64) / 255
    return bytescale(np.maximum(image, markers)), int(label), placed


def seed_orientations(args: Args) -> list[int]:
  """The seed orientations (degrees) whose head-centric structuring element leaves no pixel
  of a 32 x 32 image at cv2.dilate's border value, i.e. the only ones a seed can take."""
  gen = Generator(args, np.random.RandomState(0))
  empty = np.zeros(gen.shape)
  return [d for d in range(-180, 180)
          if cv2_dilate(empty, gen._seed_struct(d * np.pi / 180)).min() >= 0]


def check_against_opencv(cases: int = 3000, seed: int = 0) -> str:
  """cv2_dilate against the real cv2.dilate (needs OpenCV importable, e.g. a temporary
  `pip install --target DIR opencv-python-headless` and PYTHONPATH=DIR) on random float32 /
  float64 images of 3-39 rows and 3 x 3, 5 x 5, 7 x 7 kernels."""
  import cv2

  rng = np.random.default_rng(seed)
  tried = mismatched = 0
  for _ in range(cases):
    n = int(rng.integers(3, 40))
    k = int(rng.choice([3, 5, 7]))
    src = rng.random((n, n + 1)).astype(rng.choice([np.float32, np.float64]))
    kernel = (rng.random((k, k)) < 0.3).astype(np.uint8)
    if not kernel.any():
      continue
    tried += 1
    ours, theirs = cv2_dilate(src, kernel), cv2.dilate(src, kernel=kernel, iterations=1)
    mismatched += not (ours.dtype == theirs.dtype and np.array_equal(ours, theirs))
  return (f"cv2_dilate vs cv2.dilate (OpenCV {cv2.__version__}): {tried} random cases, "
          f"{mismatched} different")


def measure(difficulty: str, num: int, seed: int = 0, log_every: int = 0,
            opencv_border: bool = True) -> dict:
  """Generates num images; returns their statistics."""
  args = Args(contour_length=CONTOUR_LENGTHS[difficulty], opencv_border=opencv_border)
  gen = Generator(args, np.random.RandomState(seed))
  means, nonzero, top, labels, placed = [], [], [], [], []
  start = time.perf_counter()
  for i in range(num):
    image, label, n = gen.image()
    means.append(float(image.mean()))
    nonzero.append(float((image > 0).mean()))
    top.append(int(image.max()))
    labels.append(label)
    placed.append(n)
    if log_every and (i + 1) % log_every == 0:
      print(f"{i + 1}/{num} images, {time.perf_counter() - start:.0f} s", flush=True)
  seconds = time.perf_counter() - start
  pairs = gen.pair_outcomes
  attempts = sum(pairs.values())
  failed = attempts - pairs["ok"]
  return {
      "difficulty": difficulty, "contour_length": args.contour_length, "images": num,
      "seed": seed, "dilate_border": "opencv" if opencv_border else "free",
      "mean_pixel": statistics.fmean(means),
      "mean_pixel_sd_of_images": statistics.pstdev(means),
      "nonzero_share": statistics.fmean(nonzero),
      "images_reaching_255": sum(t == 255 for t in top),
      "label_1_share": statistics.fmean(labels),
      "distractor_slots": args.num_distractors,
      "distractors_placed_mean": statistics.fmean(placed),
      "pair_attempts": attempts, "pair_success_rate": pairs["ok"] / max(attempts, 1),
      "failed_pairs_by_stage": {k: v / max(failed, 1) for k, v in sorted(
          pairs.items(), key=lambda kv: (kv[0] != "seed", len(kv[0]), kv[0])) if k != "ok"},
      "seconds": seconds, "seconds_per_image": seconds / max(num, 1),
  }


def summary(r: dict) -> str:
  stages = r["failed_pairs_by_stage"]
  first = stages.get("step 1", 0.0)
  return "\n".join([
      f"{r['difficulty']} (contour length {r['contour_length']}), {r['images']} images, "
      f"seed {r['seed']}, dilation border {r['dilate_border']}:",
      f"  mean pixel {r['mean_pixel']:.2f} (sd over images {r['mean_pixel_sd_of_images']:.2f})"
      f", non-zero {100 * r['nonzero_share']:.2f} %",
      f"  images reaching 255: {r['images_reaching_255']} / {r['images']}; label 1: "
      f"{100 * r['label_1_share']:.1f} %",
      f"  distractors placed: {r['distractors_placed_mean']:.2f} of {r['distractor_slots']}",
      f"  pair attempts {r['pair_attempts']}, success {100 * r['pair_success_rate']:.2f} %; "
      f"failed attempts dying at the seeds {100 * stages.get('seed', 0.0):.1f} %, at the "
      f"first step {100 * first:.1f} %",
      f"  {r['seconds']:.0f} s ({r['seconds_per_image']:.3f} s per image)",
  ])


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--difficulty", choices=sorted(CONTOUR_LENGTHS), default="hard")
  parser.add_argument("--num", type=int, default=200)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dilate_border", choices=("opencv", "free"), default="opencv",
                      help="opencv: cv2.dilate's real border value (faithful); free: count "
                      "those pixels as free instead (an earlier emulation's reading)")
  parser.add_argument("--json", type=pathlib.Path, default=None, help="also write this file")
  parser.add_argument("--check_opencv", action="store_true",
                      help="only compare the cv2.dilate emulation with OpenCV (see "
                      "check_against_opencv)")
  args = parser.parse_args(argv)
  if args.check_opencv:
    print(check_against_opencv())
    return
  result = measure(args.difficulty, args.num, args.seed, log_every=200,
                   opencv_border=args.dilate_border == "opencv")
  if args.dilate_border == "opencv":
    degrees = seed_orientations(Args(contour_length=CONTOUR_LENGTHS[args.difficulty]))
    result["seed_orientations_possible"] = degrees
  print(summary(result))
  if "seed_orientations_possible" in result:
    d = result["seed_orientations_possible"]
    print(f"  seeds possible at {len(d)} of 360 orientations: {d[0]}..{d[-1]} degrees")
  if args.json:
    result = {"date": datetime.date.today().isoformat(), **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
