"""Pathfinder-32 generator (Linsley et al. 2018; Kim et al. 2020) at LRA's 32 px settings.

A vectorised re-implementation of the original snakes2.py: dashes are precomputed 9 x 9
stamps (rendered on first use, not at import) and thousands of attempts grow in lockstep on
uint8 occupancy canvases. What it reproduces, where it deviates, and the measured image
statistics: docs/data.md section 4.

CLI: python -m rmaat_jax.data.pathfinder --out DIR --difficulty hard --num N --seed S --workers K
writes LRA's layout (curv_contour_length_<L>/imgs/<b>/sample_<i>.png and metadata/<b>.npy);
the output does not depend on the worker count.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from rmaat_jax.errors import DataFormatError, DataMissingError

SIZE, PAD = 32, 4
CAN = SIZE + 2 * PAD
DASH, MARGIN, AA, SEED_DISTANCE, MARKER_RADIUS, CONTINUITY = 2, 1, 2, 7, 1.5, 1.0
TRIALS, DISTRACTOR_TRIES = 3, 5  # max_paddle_retrial=2, max_distractor_contour_retrial=4
TARGET_CONTRAST, DISTRACTOR_CONTRAST = 1.5, 2.0
CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}
PAIR_SUCCESS = {6: 0.044, 9: 0.013, 14: 0.0022}  # measured; only sizes the rounds of attempts
# Part of generated data sets' names: a generator that draws other images gets a new one, so
# that a prepared copy of the earlier images is never read as this version's.
GENERATOR_VERSION = 2  # 2: seeds only where the original's cv2.dilate border allows
FULL, REJECT, FREE = 255, 459, 76  # occupancy in 1/255: full, sum >= 1.8 overlaps, <= 0.3 free


def _sincos(theta: np.ndarray) -> np.ndarray:
  return np.stack([np.sin(theta), np.cos(theta)], -1)


def _dash_stamps(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(image, occupancy) uint8 [n, 9, 9] stamps of dashes anchored at the centre pixel."""
  from PIL import Image, ImageDraw  # PIL only where pixels are drawn: importing stays cheap

  c = (DASH + 1 + MARGIN) * AA
  disc = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 4]
  imgs, occs = [], []
  for t in thetas:
    big = Image.new("L", (2 * c + 1, 2 * c + 1), 0)
    end = (int(np.ceil(c + DASH * AA * np.cos(t))), int(np.ceil(c + DASH * AA * np.sin(t))))
    ImageDraw.Draw(big).line([(c, c), end], fill=255, width=1)
    a = np.pad(np.asarray(big), 2)
    dil = np.max([a[2 + dy:2 + dy + 2 * c + 1, 2 + dx:2 + dx + 2 * c + 1] for dy, dx in disc], 0)
    imgs.append(np.asarray(big.resize((9, 9), Image.LANCZOS)))
    occs.append(np.asarray(Image.fromarray(dil).resize((9, 9), Image.LANCZOS)))
  return np.stack(imgs), np.stack(occs)


# Ring of candidate dash ends: one sample per pixel of arc at radius 3, truncated to pixels.
_ang = np.deg2rad(np.arange(0, 360, 360 / (2 * (DASH + MARGIN) * np.pi)))
_ends = np.floor((DASH + MARGIN) * _sincos(_ang)).astype(np.int64).tolist()
# The sorted distinct ends: np.unique(axis=0)'s result, without its import of numpy.ma (12 ms).
RING = np.array(sorted(set(map(tuple, _ends))), np.int64)
RING_ORIENT = np.arctan2(RING[:, 0], RING[:, 1])
_flip = np.where(RING_ORIENT < 0, RING_ORIENT + np.pi, RING_ORIENT - np.pi)
# Stamp ids: 0-359 seed dashes at -180..179 degrees, then ring dashes (drawn back towards the
# pivot), then an all-zero stamp for absent distractors.
RING_SID = 360
ZERO_SID = 360 + len(RING)
_W = np.arange(9)
FRAME = np.zeros((CAN, CAN), np.uint8)
FRAME[PAD:PAD + SIZE, PAD:PAD + SIZE] = FULL
FRAME[PAD + 1:PAD + SIZE - 1, PAD + 1:PAD + SIZE - 1] = 0  # the original's padding=1 border
INSIDE, INNER = np.zeros((2, CAN, CAN), np.uint8)
INSIDE[PAD:PAD + SIZE, PAD:PAD + SIZE] = 1
INNER[PAD + 1:PAD + SIZE - 1, PAD + 1:PAD + SIZE - 1] = 1


@dataclasses.dataclass(frozen=True)
class Stamps:
  """The precomputed dash stamps and what derives from them (see stamps())."""

  img: np.ndarray  # float32 [379, 9, 9] in [0, 1]: what a dash draws (stamp ids above)
  occ: np.ndarray  # uint8 [379, 9, 9] in 1/255: the occupancy it claims
  seed_kernel: np.ndarray  # bool [360, 7, 7]: seed dash cores, for the free-tail rule
  seed_offs: tuple[tuple[int, int], ...]  # the (i, j) any seed kernel uses
  seed_possible: np.ndarray  # bool [360]: orientations the original can seed at all
  pair_free: np.ndarray  # bool [360, 32 * 32]: where the pair's first seed may start


def _free_tails(canvas: np.ndarray, sid: np.ndarray, tables: Stamps | None = None) -> np.ndarray:
  """bool [n, 32 * 32]: tails where seed dash sid[k] may start on canvas[k] (original rule).

  A tail is free if the occupancy dilated by the dash's full-occupancy core is <= 0.3; the
  original's 7 x 7 head-centric structuring element puts that core at offset (i-3, j-3).
  cv2.dilate ignores the cells that fall outside the image, and leaves a pixel none of whose
  cells falls inside at its border value, -DBL_MAX; the original's
  find_available_coordinates then returns no pixel at all. So orientations whose core leaves
  such a pixel (all but -150..-121 degrees) have no free tail (`seed_possible`).
  """
  tables = tables or stamps()
  dil = np.zeros((len(sid), SIZE, SIZE), np.uint8)
  for i, j in tables.seed_offs:
    sel = tables.seed_kernel[sid, i, j]
    part = canvas[sel, PAD + i - 3:PAD + i - 3 + SIZE, PAD + j - 3:PAD + j - 3 + SIZE]
    dil[sel] = np.maximum(dil[sel], part)
  free = (dil <= FREE).reshape(len(sid), SIZE * SIZE)
  if len(tables.seed_possible):
    free &= tables.seed_possible[sid][:, None]
  return free


def _seed_possible(kernel: np.ndarray, offs: tuple[tuple[int, int], ...]) -> np.ndarray:
  """bool [360]: whether every image pixel has a cell of orientation d's seed core inside the
  image (else cv2.dilate leaves its border value there, and the original seeds nowhere)."""
  covered = np.zeros((len(kernel), SIZE, SIZE), bool)
  for i, j in offs:
    inside = INSIDE[PAD + i - 3:PAD + i - 3 + SIZE, PAD + j - 3:PAD + j - 3 + SIZE] > 0
    covered[kernel[:, i, j]] |= inside
  return covered.all((1, 2))


@functools.cache
def stamps() -> Stamps:
  """Renders the 378 dash stamps (360 seed angles, 18 ring offsets) once, on first use.

  Cached per process (about 50 ms), so importing this module renders nothing: the config
  checks import it for CONTOUR_LENGTHS alone.
  """
  img, occ = _dash_stamps(np.concatenate([np.deg2rad(np.arange(-180, 180)), _flip]))
  img = np.concatenate([img, np.zeros((1, 9, 9), np.uint8)]).astype(np.float32) / 255
  occ = np.concatenate([occ, np.zeros((1, 9, 9), np.uint8)])
  kernel = occ[:360, :7, :7] == FULL
  offs = tuple((i, j) for i in range(7) for j in range(7) if kernel[:, i, j].any())
  partial = Stamps(img, occ, kernel, offs, _seed_possible(kernel, offs), np.zeros(0, bool))
  # The pair's first seed: everything but the central 4 x 4 px (2 x seed distance) is blocked.
  lined = FRAME | INNER * FULL
  c = slice(PAD + 2 * SEED_DISTANCE, PAD + SIZE - 2 * SEED_DISTANCE)
  lined[c, c] = 0
  pair_free = _free_tails(np.broadcast_to(lined, (360, CAN, CAN)), np.arange(360), partial)
  for a in (img, occ, kernel, partial.seed_possible, pair_free):
    a.flags.writeable = False  # shared through the cache
  return dataclasses.replace(partial, pair_free=pair_free)


def _window(rows: np.ndarray, pos: np.ndarray):
  """Index of the 9 x 9 canvas window of the stamp anchored at image pixel pos ([n, 2])."""
  return (rows[:, None, None], pos[:, 0, None, None] + _W[None, :, None],
          pos[:, 1, None, None] + _W[None, None, :])


def _paste(canvas: np.ndarray, rows: np.ndarray, pos: np.ndarray, tiles: np.ndarray) -> None:
  idx = _window(rows, pos)  # clipped to the image like the original's placement
  canvas[idx] = np.maximum(canvas[idx], tiles * INSIDE[idx[1:]])


def _fits(canvas: np.ndarray, rows: np.ndarray, pos: np.ndarray, sid: np.ndarray,
          frame: bool = True) -> np.ndarray:
  """Whether dash sid placed at pos stays below the overlap threshold (optionally frame-blind)."""
  idx = _window(rows, pos)
  win = canvas[idx] if frame else canvas[idx] * INNER[idx[1:]]
  return (win.astype(np.int16) + stamps().occ[sid]).max((1, 2)) < REJECT


def _pick(rng, free: np.ndarray) -> np.ndarray:
  """A uniformly drawn free pixel (y, x) per row of free [n, 32 * 32]."""
  pix = np.argmax(rng.random(free.shape, dtype=np.float32) * free, 1)
  return np.stack(np.divmod(pix, SIZE), 1)


def _seed_pivot(tail: np.ndarray, deg: np.ndarray):
  """Pivot behind a seed dash and whether head and pivot lie in the image (original rounding)."""
  t = deg * np.pi / 180
  head = np.ceil(tail + DASH * _sincos(t))
  pivot = np.ceil(head + (DASH + MARGIN) * _sincos(np.where(t < 0, t + np.pi, t - np.pi)))
  inb = ((head >= 0) & (head < SIZE) & (pivot >= 0) & (pivot < SIZE)).all(1)
  return pivot, t, inb


def _extend(rng, canvas, rows, pivot, orient):
  """One growth step for canvas[rows]: -> ok, new dash anchor, stamp id, orientation, pivot."""
  n = len(rows)
  piv = np.ceil(pivot + (DASH + 2 * MARGIN) * _sincos(orient)).astype(np.int64)
  cand = piv[:, None, :] + RING[None]
  inb = ((cand >= 0) & (cand < SIZE)).all(-1)
  cy, cx = np.clip(cand, -1, SIZE).transpose(2, 0, 1) + PAD
  k = rows[:, None]
  dil = canvas[k, cy, cx]
  for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):  # dilation by the margin (a cross)
    dil = np.maximum(dil, canvas[k, cy + dy, cx + dx])
  turn = np.abs(RING_ORIENT[None] - orient[:, None])
  turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * CONTINUITY, np.pi / 2)
  w = np.maximum(np.cos(turn), 0) ** 2 * (FULL - dil.astype(np.float64)) / FULL * inb
  total = w.sum(1)
  cmf = np.cumsum(w, 1) / np.maximum(total, 1e-12)[:, None]
  pick = (cmf[:, None, :] <= rng.random((n, TRIALS))[:, :, None]).sum(-1)
  pick = np.minimum(pick, len(RING) - 1)
  chosen = np.full(n, -1)
  for t in range(TRIALS):  # redraw from the same distribution while the dash overlaps
    todo = np.flatnonzero((chosen < 0) & (total >= 1e-4))
    r = pick[todo, t]
    fit = _fits(canvas, rows[todo], piv[todo] + RING[r], RING_SID + r)
    chosen[todo[fit]] = r[fit]
  ok = chosen >= 0
  r = np.maximum(chosen, 0)
  return ok, piv + RING[r], RING_SID + r, RING_ORIENT[r], piv


def _grow_pairs(rng, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
  """n attempts at the two target contours -> dashes [m, 2, length, 3] and occupancy [m]."""
  occ_stamps = stamps().occ
  tail, deg, ok = np.zeros((n, 2, 2), np.int64), np.zeros((n, 2), np.int64), np.ones(n, bool)
  for c in (0, 1):  # the original's seed loops: 3 draws while the head or pivot leave the image
    todo = np.flatnonzero(ok)
    for _ in range(TRIALS):
      d = rng.integers(-180, 180, len(todo))
      if c == 0:
        free = stamps().pair_free[d + 180]
        t = _pick(rng, free)
        # No free tail (an orientation the original cannot seed): the pair fails at once.
        ok[todo[~free.any(1)]] = False
        keep = free.any(1)
        todo, d, t = todo[keep], d[keep], t[keep]
      else:  # the second seed sits 7 px from the first, in a random direction
        a = np.deg2rad(rng.integers(0, 360, len(todo)))
        t = (tail[todo, 0] + np.round(SEED_DISTANCE * _sincos(a))).astype(np.int64)
      inb = _seed_pivot(t, d)[2]
      tail[todo[inb], c], deg[todo[inb], c] = t[inb], d[inb]
      todo = todo[~inb]
    ok[todo] = False
  rows = np.flatnonzero(ok)
  pivot, orient, _ = _seed_pivot(tail.reshape(-1, 2), deg.reshape(-1))
  pivot, orient = pivot.reshape(n, 2, 2), orient.reshape(n, 2)
  dashes = np.zeros((n, 2, length, 3), np.int64)
  dashes[:, :, 0, :2], dashes[:, :, 0, 2] = tail, deg + 180
  # view[:, c]: what contour c must avoid = committed dashes + the other contour's newest
  view = np.broadcast_to(FRAME, (n, 2, CAN, CAN)).copy()
  for c in (0, 1):
    _paste(view[:, c], rows, tail[rows, 1 - c], occ_stamps[deg[rows, 1 - c] + 180])
  for step in range(1, length):
    for c in (0, 1):
      ok, pos, sid, o, piv = _extend(rng, view[:, c], rows, pivot[rows, c], orient[rows, c])
      rows, pos, sid, o, piv = rows[ok], pos[ok], sid[ok], o[ok], piv[ok]
      prev = dashes[rows, c, step - 1]
      _paste(view[:, c], rows, prev[:, :2], occ_stamps[prev[:, 2]])
      _paste(view[:, 1 - c], rows, pos, occ_stamps[sid])
      dashes[rows, c, step, :2], dashes[rows, c, step, 2] = pos, sid
      pivot[rows, c], orient[rows, c] = piv, o
  last = dashes[rows, 0, -1]
  occ = view[rows, 0]
  _paste(occ, np.arange(len(rows)), last[:, :2], occ_stamps[last[:, 2]])
  return dashes[rows], occ


def _grow_one(rng, canvas: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """One distractor attempt on every canvas (changed in place only where ok) -> ok, dashes."""
  occ_stamps = stamps().occ
  n = len(canvas)
  inner = canvas[:, PAD:PAD + SIZE, PAD:PAD + SIZE]
  ok = (inner <= FREE).sum((1, 2)) >= 0.01 * SIZE * SIZE  # stop_with_availability=0.01
  seeded = np.zeros(n, bool)
  dashes = np.zeros((n, length, 3), np.int64)
  pivot, orient = np.zeros((n, 2)), np.zeros(n)
  for _ in range(TRIALS):
    rows = np.flatnonzero(ok & ~seeded)
    sid = rng.integers(0, 360, len(rows))  # seed stamp id = degrees + 180
    free = _free_tails(canvas[rows], sid)
    tail = _pick(rng, free)
    piv, t, inb = _seed_pivot(tail, sid - 180)
    ok[rows[~free.any(1)]] = False  # no free pixel: this attempt fails outright
    good = free.any(1) & inb & _fits(canvas, rows, tail, sid, frame=False)
    rows = rows[good]
    seeded[rows] = True
    dashes[rows, 0, :2], dashes[rows, 0, 2] = tail[good], sid[good]
    pivot[rows], orient[rows] = piv[good], t[good]
  rows = np.flatnonzero(ok & seeded)
  view = canvas[rows]  # a copy: failed attempts leave the canvas untouched
  local = np.arange(len(rows))
  for step in range(1, length):
    good, pos, sid, o, piv = _extend(rng, view, local, pivot[rows], orient[rows])
    rows, local, pos, sid = rows[good], local[good], pos[good], sid[good]
    o, piv = o[good], piv[good]
    prev = dashes[rows, step - 1]
    _paste(view, local, prev[:, :2], occ_stamps[prev[:, 2]])
    dashes[rows, step, :2], dashes[rows, step, 2] = pos, sid
    pivot[rows], orient[rows] = piv, o
  _paste(view, local, dashes[rows, -1, :2], occ_stamps[dashes[rows, -1, 2]])
  canvas[rows] = view[local]
  ok = np.zeros(n, bool)
  ok[rows] = True
  return ok, dashes


@functools.cache
def _marker(y: int, x: int) -> np.ndarray:
  """The original's draw_circle: a radius-1.5 disc at 2x, LANCZOS-shrunk, in [0, 1]."""
  from PIL import Image

  yy, xx = np.ogrid[-y * AA:(SIZE - y) * AA, -x * AA:(SIZE - x) * AA]
  disc = ((xx ** 2 + yy ** 2 <= (MARKER_RADIUS * AA) ** 2) * 255).astype(np.uint8)
  return np.asarray(Image.fromarray(disc).resize((SIZE, SIZE), Image.LANCZOS)) / 255.0


def generate_batch(num: int, difficulty: str, rng: np.random.Generator):
  """num images -> (uint8 [num, 32, 32], int64 labels [num], records).

  records[i] = {"label", "contours", "markers"}: contours[0] is contour A (origin marker),
  contours[1] is B, the rest distractors; each an int array [dashes, 3] of (y, x, stamp id)
  with (y, x) the dash's anchor pixel, so contour[0, :2] is its origin tip and contour[-1, :2]
  its far tip. markers is [2, 2]: A's origin tip, then A's (label 1) or B's (label 0) far tip.
  """
  img_stamps = stamps().img
  length = CONTOUR_LENGTHS[difficulty]
  d_len = length // 3
  d_num = 20 // d_len
  parts, occs, have = [], [], 0
  while have < num:  # rounds of lockstep attempts; sizes depend only on counts (reproducible)
    tries = min(int((num - have) / PAIR_SUCCESS[length] * 1.25) + 64, 8192)
    dashes, occ = _grow_pairs(rng, tries, length)
    parts.append(dashes[:num - have])
    occs.append(occ[:num - have])
    have += len(parts[-1])
  pairs, occ = np.concatenate(parts), np.concatenate(occs)
  flip = rng.integers(0, 2, num).astype(bool)  # which of the two contours is A
  pairs[flip] = pairs[flip, ::-1]
  distract = np.zeros((num, d_num, d_len, 3), np.int64)
  distract[..., 2] = ZERO_SID
  present = np.zeros((num, d_num), bool)
  for s in range(d_num):
    for _ in range(DISTRACTOR_TRIES):
      todo = np.flatnonzero(~present[:, s])
      if not len(todo):
        break
      sub = occ[todo]
      ok, dashes = _grow_one(rng, sub, d_len)
      occ[todo[ok]] = sub[ok]
      distract[todo[ok], s] = dashes[ok]
      present[todo[ok], s] = True
  labels = rng.permutation(np.arange(num) % 2)
  canvas = np.zeros((num, CAN, CAN), np.float32)
  rows = np.arange(num)
  for group, contrast in ((pairs, TARGET_CONTRAST), (distract, DISTRACTOR_CONTRAST)):
    for d in group.reshape(num, -1, 3).transpose(1, 0, 2):
      _paste(canvas, rows, d[:, :2], img_stamps[d[:, 2]] * contrast)
  far = np.where(labels[:, None] == 1, pairs[:, 0, -1, :2], pairs[:, 1, -1, :2])
  markers = np.stack([pairs[:, 0, 0, :2], far], 1)
  image = canvas[:, PAD:PAD + SIZE, PAD:PAD + SIZE].astype(np.float64)
  for i, (a, b) in enumerate(markers):
    image[i] = np.maximum(image[i], np.maximum(_marker(*map(int, a)), _marker(*map(int, b))))
  top = image.max((1, 2), keepdims=True)
  images = (np.clip(image * (255 / top), 0, 255) + 0.5).astype(np.uint8)
  records = [{"label": int(labels[i]), "markers": markers[i],
              "contours": [pairs[i, 0], pairs[i, 1]] + list(distract[i, present[i]])}
             for i in range(num)]
  return images, labels.astype(np.int64), records


def occupancy(contour: np.ndarray) -> np.ndarray:
  """Occupancy mask [32, 32] in [0, 1] of a contour record (for checks)."""
  occ_stamps = stamps().occ
  canvas = np.zeros((1, CAN, CAN), np.uint8)
  for y, x, sid in contour:
    _paste(canvas, np.zeros(1, np.int64), np.array([[y, x]]), occ_stamps[sid][None])
  return canvas[0, PAD:PAD + SIZE, PAD:PAD + SIZE] / FULL


def batch_rng(seed: int, difficulty: str, batch: int) -> np.random.Generator:
  return np.random.default_rng([seed, CONTOUR_LENGTHS[difficulty], batch])


def _write_batch(job: tuple[str, str, int, int, int]) -> int:
  """Generates and writes batch `batch`; module level, so spawned workers can import it."""
  from PIL import Image

  root, difficulty, seed, batch, num = job
  images, labels, _ = generate_batch(num, difficulty, batch_rng(seed, difficulty, batch))
  length = CONTOUR_LENGTHS[difficulty]
  img_dir = Path(root, "imgs", str(batch))
  img_dir.mkdir(parents=True, exist_ok=True)
  lines = []
  for i, (image, label) in enumerate(zip(images, labels, strict=True)):
    Image.fromarray(image, "L").save(img_dir / f"sample_{i}.png")
    lines.append(f"imgs/{batch} sample_{i}.png {i} {label} {CONTINUITY} {length} {length // 3} "
                 f"{DASH} 0.5 {MARGIN} 1\n")
  meta = Path(root, "metadata", f"{batch}.npy")
  meta.parent.mkdir(parents=True, exist_ok=True)
  tmp = meta.with_name(f".{batch}.npy.tmp")
  tmp.write_text("".join(lines))
  os.replace(tmp, meta)  # last: a batch without metadata is incomplete
  return num


def read_metadata(root: str | os.PathLike) -> list[tuple[str, int]]:
  """(png path, label) for every line of root/metadata/*.npy (root: a contour-length dir)."""
  files = sorted(Path(root, "metadata").glob("*.npy"),
                 key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p))
  if not files:
    raise DataMissingError(f"no metadata/*.npy under {root}")
  out = []
  for path in files:
    for n, line in enumerate(path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      f = line.split()
      if len(f) < 4 or f[3] not in ("0", "1"):
        raise DataFormatError(f"{path}:{n}: malformed metadata line (want '<dir> <png> <i> <0|1> "
                         f"...'): {line!r}")
      out.append((str(Path(root, f[0], f[1])), int(f[3])))
  return out


def write_dataset(out: str | os.PathLike, difficulty: str, num: int, seed: int, workers: int = 1,
                  batch_size: int = 1000, resume: bool = False,
                  on_batch: Callable[[int, int], None] | None = None) -> Path:
  """Writes num images in the LRA layout under out/curv_contour_length_<L>; returns that dir.

  Batches of batch_size go to `workers` spawned processes (not forked: the caller may have
  loaded JAX, whose threads a fork can deadlock), so a script calling this with workers > 1
  needs the usual `if __name__ == "__main__":` guard. on_batch(images, batches) follows each
  finished batch. resume skips batches whose metadata file already exists.
  """
  root = Path(out, f"curv_contour_length_{CONTOUR_LENGTHS[difficulty]}")
  jobs = [(str(root), difficulty, seed, b, min(batch_size, num - b * batch_size))
          for b in range(-(-num // batch_size))]
  if resume:
    jobs = [j for j in jobs if not (root / "metadata" / f"{j[3]}.npy").exists()]
  parallel = workers > 1 and len(jobs) > 1
  pool = mp.get_context("spawn").Pool(min(workers, len(jobs))) if parallel else nullcontext()
  with pool:
    for n in pool.imap_unordered(_write_batch, jobs) if parallel else map(_write_batch, jobs):
      if on_batch is not None:
        on_batch(n, len(jobs))
  return root


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, exit status 2
    print(f"pathfinder: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> int:
  p = _Parser(description="Generate Pathfinder-32 in the LRA layout.")
  p.add_argument("--out", required=True)
  p.add_argument("--difficulty", required=True, choices=sorted(CONTOUR_LENGTHS))
  p.add_argument("--num", type=int, required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--batch-size", type=int, default=1000)
  p.add_argument("--resume", action="store_true", help="skip batches whose metadata exists")
  a = p.parse_args(argv)
  for name in ("num", "workers", "batch_size"):
    if getattr(a, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1")
  if a.seed < 0:
    p.error("--seed must be >= 0")
  start, done = time.perf_counter(), []

  def progress(n: int, batches: int) -> None:
    done.append(n)
    print(f"batch {len(done)}/{batches}: {sum(done) / (time.perf_counter() - start):.1f} "
          "images/s", flush=True)

  root = write_dataset(a.out, a.difficulty, a.num, a.seed, a.workers, a.batch_size, a.resume,
                       progress)
  secs = time.perf_counter() - start
  print(f"wrote {sum(done)} images in {len(done)} batches to {root} in {secs:.1f} s: "
        f"{sum(done) / max(secs, 1e-9):.1f} images/s with {a.workers} worker(s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
