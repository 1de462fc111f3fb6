"""Pathfinder-32 generator: contour geometry from its own records, image statistics,
reproducibility, and the CLI's LRA layout."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rmaat_jax.data import pathfinder as pf

# Hard-set statistics of the original snakes2.py at LRA's arguments, which the generator now
# follows in how cv2.dilate's border confines seeds (docs/data.md sections 4.2 and 4.4;
# experiments/data_checks/pathfinder_reference.py emulates the original: 20.3 / 0.344,
# 1.2 distractors).
HARD_MEAN, HARD_NONZERO, HARD_DISTRACTORS = 20.3, 0.344, 1.2


@pytest.fixture(scope="module")
def hard():
  return pf.generate_batch(300, "hard", np.random.default_rng(0))


@pytest.fixture(scope="module")
def easy():
  return pf.generate_batch(40, "easy", np.random.default_rng(1))


def _same(a, b):
  return tuple(int(v) for v in a) == tuple(int(v) for v in b)


@pytest.mark.parametrize("name", ["hard", "easy"])
def test_markers_sit_on_contour_tips(name, request):
  images, labels, records = request.getfixturevalue(name)
  length = pf.CONTOUR_LENGTHS[name]
  for image, label, rec in zip(images, labels, records, strict=True):
    a, b, *distractors = rec["contours"]
    assert rec["label"] == label
    assert len(a) == len(b) == length
    assert len(distractors) <= 20 // (length // 3)
    assert all(len(d) == length // 3 for d in distractors)
    origin, far = rec["markers"]
    assert _same(origin, a[0, :2])  # A's origin tip (its first dash's free end)
    if label == 1:
      assert _same(far, a[-1, :2])  # the far tip of the same contour
    else:
      assert _same(far, b[-1, :2])  # the far tip of the other target contour
      assert not any(_same(far, d[:2]) for d in a)
    for y, x in rec["markers"]:  # the markers are drawn
      assert image[y, x] > 100
    for c in rec["contours"]:  # consecutive dashes one growth step (4 px, ceil-rounded) apart
      step = np.linalg.norm(np.diff(c[:, :2], axis=0), axis=1)
      assert ((step >= 2) & (step <= 8.5)).all()


@pytest.mark.parametrize("name", ["hard", "easy"])
def test_contours_do_not_overlap(name, request):
  _, _, records = request.getfixturevalue(name)
  for rec in records[:40]:
    occ = [pf.occupancy(c) for c in rec["contours"]]
    for i in range(len(occ)):
      for j in range(i + 1, len(occ)):
        assert (occ[i] + occ[j]).max() < 1.8, (i, j)
    # and the drawn pixels of a dash never sit in another contour's dash cores
    for i, c in enumerate(rec["contours"]):
      others = np.max([o for j, o in enumerate(occ) if j != i], axis=0)
      lit = pf.occupancy(c) >= 0.99
      assert not (lit & (others >= 0.99)).any()


def test_hard_statistics(hard):
  images, labels, records = hard
  assert images.dtype == np.uint8 and images.shape == (300, 32, 32)
  assert abs(images.mean() - HARD_MEAN) < 1.5
  assert abs((images > 0).mean() - HARD_NONZERO) < 0.025
  distractors = np.mean([len(r["contours"]) - 2 for r in records])
  assert abs(distractors - HARD_DISTRACTORS) < 0.4, distractors
  assert (images.reshape(len(images), -1).max(1) == 255).all()
  assert labels.sum() == 150


@pytest.mark.parametrize("name", ["hard", "easy"])
def test_seeds_only_where_the_originals_dilation_border_allows(name, request):
  # cv2.dilate leaves pixels outside its seed core's reach at -DBL_MAX for every orientation
  # but -150..-121 degrees, and the original then finds no free pixel: the pair's first seed
  # and every distractor seed point that way (the pair's second seed is placed, not found).
  assert np.flatnonzero(pf.stamps().seed_possible).tolist() == list(range(30, 60))
  _, _, records = request.getfixturevalue(name)
  seeds = lambda contour: int(contour[0, 2]) - 180  # noqa: E731 (stamp id = degrees + 180)
  for rec in records:
    a, b, *distractors = rec["contours"]
    assert -150 <= seeds(a) <= -121 or -150 <= seeds(b) <= -121
    assert all(-150 <= seeds(d) <= -121 for d in distractors)


def test_reproducible():
  a = pf.generate_batch(12, "intermediate", np.random.default_rng(7))
  b = pf.generate_batch(12, "intermediate", np.random.default_rng(7))
  assert a[0].tobytes() == b[0].tobytes() and (a[1] == b[1]).all()
  c = pf.generate_batch(12, "intermediate", np.random.default_rng(8))
  assert a[0].tobytes() != c[0].tobytes()


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "rmaat_jax.data.pathfinder", *args],
                        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
  out = {}
  for workers in (1, 2):
    d = tmp_path_factory.mktemp(f"pf{workers}")
    r = _cli("--out", str(d), "--difficulty", "easy", "--num", "7", "--seed", "3",
             "--workers", str(workers), "--batch-size", "3")
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout
    out[workers] = d / "curv_contour_length_6"
  return out


def test_cli_layout_and_read_metadata(cli_runs):
  root = cli_runs[1]
  assert sorted(p.name for p in (root / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
  lines = (root / "metadata" / "2.npy").read_text().splitlines()
  assert lines == [f"imgs/2 sample_0.png 0 {lines[0].split()[3]} 1.0 6 2 2 0.5 1 1"]
  items = pf.read_metadata(root)
  assert len(items) == 7 and {label for _, label in items} <= {0, 1}
  for path, _ in items:
    with Image.open(path) as im:
      assert im.mode == "L" and im.size == (32, 32)
  assert items[0][0] == str(root / "imgs" / "0" / "sample_0.png")


def test_cli_same_output_for_any_worker_count(cli_runs):
  one, two = cli_runs[1], cli_runs[2]
  files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
  assert len(files) == 10
  for f in files:
    assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_read_metadata_names_the_bad_file(tmp_path):
  (tmp_path / "metadata").mkdir()
  (tmp_path / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 1\n")
  (tmp_path / "metadata" / "1.npy").write_text("imgs/1 sample_0.png 0 1\nimgs/1 sample_1.png\n")
  with pytest.raises(ValueError, match=r"1\.npy:2"):
    pf.read_metadata(tmp_path)
  with pytest.raises(FileNotFoundError, match="metadata"):
    pf.read_metadata(tmp_path / "missing")


@pytest.mark.parametrize("argv", [
    ["--out", "x", "--difficulty", "impossible", "--num", "5"],
    ["--out", "x", "--difficulty", "hard", "--num", "0"],
    ["--out", "x", "--difficulty", "hard", "--num", "5", "--workers", "-1"],
    ["--difficulty", "hard", "--num", "5"],
])
def test_bad_arguments_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as e:
    pf.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and "error" in err


def test_write_dataset_resume_skips_complete_batches(tmp_path):
  calls = []
  root = pf.write_dataset(tmp_path, "easy", 5, 0, batch_size=2,
                          on_batch=lambda n, batches: calls.append((n, batches)))
  assert root == tmp_path / "curv_contour_length_6" and calls == [(2, 3), (2, 3), (1, 3)]
  (root / "metadata" / "1.npy").unlink()  # an incomplete batch
  calls.clear()
  pf.write_dataset(tmp_path, "easy", 5, 0, batch_size=2, resume=True,
                   on_batch=lambda n, batches: calls.append((n, batches)))
  assert calls == [(2, 1)] and len(pf.read_metadata(root)) == 5


def test_write_dataset_spawns_its_workers(tmp_path, monkeypatch):
  # A fork would copy a parent that may hold JAX's threads; a spawned worker imports its
  # function by module and name, so that function must live at module level.
  assert pickle.loads(pickle.dumps(pf._write_batch)) is pf._write_batch
  methods = []
  get_context = pf.mp.get_context
  monkeypatch.setattr(pf.mp, "get_context", lambda m=None: methods.append(m) or get_context(m))
  root = pf.write_dataset(tmp_path, "easy", 4, 0, workers=2, batch_size=2)
  assert methods == ["spawn"] and len(pf.read_metadata(root)) == 4
