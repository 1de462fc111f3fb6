"""Fault-injection campaign: does a run survive being killed, corrupted, preempted, diverging?

    python -m experiments.reliability.fault_injection [--trials 10] [--others 3] [--out_dir DIR]

A tiny model on generated ListOps (40 steps, a checkpoint and a validation every 5 steps, a
log every 2) is trained once without faults (the reference), then, each trial in a fresh
workdir, with one kind of fault; the same command is then run again and its results.json is
compared with the reference (bar `resumed_from_step`):

- `sigkill_random` (--trials): SIGKILL at a uniformly random moment after the first
  checkpoint, up to the reference run's end (training, validation, checkpoint writes, test).
- `sigkill_mid_write` (--others): SIGKILL the moment orbax starts writing a step into
  `checkpoints/` or `best/` (alternately; a random step).
- `corrupt_latest` (--others): the newest checkpoint of a finished run damaged (cycling
  through truncated / garbage array data, garbage metadata, a deleted array index or iterator
  state, an emptied step directory); the rerun must report it and resume from the previous.
- `sigterm` (--others): SIGTERM after a random checkpoint; exit status 143, then resume from
  exactly the preempted step.
- `nan` (--others, up to 2): learning rate 1e6 without clipping; the run must stop with one
  `error:` line naming the step, keep only finite checkpoints and write no results.

Counted per trial: survived (identical results; for `nan` the clean stop), steps redone
(the killed run's last logged step minus the step the rerun resumed from: work lost, to
within one logging step, expected), and checkpoints lost (a complete checkpoint the rerun
did not resume from, other than a deliberately corrupted one: must be 0). Uses the fault
primitives of tests/test_faults.py (faults.py). Writes
experiments/results/fault_injection.{json,md}.
"""

import argparse
import json
import os
import pathlib
import random
import re
import shutil
import signal
import statistics
import tempfile
import time

from experiments.reliability.faults import (
    CORRUPTIONS,
    corrupt_checkpoint,
    error_lines,
    kill_during_checkpoint_write,
    listops_config,
    listops_flags,
    results_without_resume,
    run_main,
    tmp_dirs,
    wait_for_path,
)
from experiments.results_store import RESULTS_DIR, provenance, provenance_line

TRAIN = {"train.num_steps": 40, "train.checkpoint_every": 5, "train.eval_every": 5,
         "train.log_every": 2}
DIVERGE = {"train.num_steps": 12, "train.checkpoint_every": 1, "train.eval_every": 1,
           "train.log_every": 1, "train.warmup_steps": 3, "train.learning_rate": 1e6,
           "train.grad_clip": 0}
PREEMPTED = 143


class Campaign:
  def __init__(self, root: pathlib.Path, seed: int):
    self.root, self.rng = root, random.Random(seed)
    self.data = root / "tfds"
    self.cache = root / "jax_cache"
    self.flags = listops_flags(self.data, **TRAIN)
    self.count = 0

  def run(self, workdir, *flags, **kwargs):
    return run_main(workdir, *(flags or self.flags), compile_cache=self.cache, **kwargs)

  def start(self, workdir):
    log = open(workdir.parent / f"{workdir.name}.log", "w")  # the run's stderr
    return self.run(workdir, wait=False, stderr=log), log

  def workdir(self, kind: str) -> pathlib.Path:
    self.count += 1
    path = self.root / f"{self.count:02d}_{kind}" / "work"
    path.parent.mkdir(parents=True)
    return path

  def reference(self) -> None:
    """The uninterrupted run; also times when training starts (first checkpoint) and ends."""
    workdir = self.root / "reference" / "work"
    workdir.parent.mkdir(parents=True)
    start = time.time()
    process, log = self.start(workdir)
    assert wait_for_path(process, workdir / "checkpoints" / "5"), "reference run failed"
    self.first_checkpoint_s = time.time() - start
    code = process.wait()
    log.close()
    assert code == 0, (workdir.parent / "work.log").read_text()[-3000:]
    self.duration_s = time.time() - start
    self.reference_dir = workdir
    self.results = results_without_resume(workdir)[0]

  def rerun(self, workdir) -> dict:
    """Runs the same command again; the trial's outcome."""
    complete = _steps(workdir / "checkpoints")
    code, stderr = self.run(workdir)
    outcome = {"rerun_status": code}
    if code != 0:
      return {**outcome, "survived": False, "error": error_lines(stderr)[-1:]}
    resumed, raw = results_without_resume(workdir)
    resumed_from = raw["resumed_from_step"]
    return {**outcome, "survived": resumed == self.results, "resumed_from": resumed_from,
            "complete_checkpoints": complete,
            "checkpoints_lost": int(bool(complete) and resumed_from != complete[-1]),
            "tmp_dirs_left": tmp_dirs(workdir / "checkpoints") + tmp_dirs(workdir / "best")}

  def sigkill_random(self) -> dict:
    workdir = self.workdir("sigkill_random")
    # Start-up (imports, data, compiles) takes most of a run and varies with the machine's
    # load: time the kill from this run's first checkpoint, over the rest of the reference.
    delay = self.rng.uniform(-1, self.duration_s - self.first_checkpoint_s + 1)
    process, log = self.start(workdir)
    wait_for_path(process, workdir / "checkpoints" / "5")
    time.sleep(max(delay, 0))
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    last = _last_logged_step(workdir)
    outcome = self.rerun(workdir)
    outcome.update(kill_after_s=round(delay, 1), phase=_phase(last, finished))
    if outcome.get("resumed_from") is not None or last:
      outcome["steps_redone"] = max(last - (outcome.get("resumed_from") or 0), 0)
    return outcome

  def sigkill_mid_write(self, i: int) -> dict:
    workdir = self.workdir("sigkill_mid_write")
    directory = ("checkpoints", "best")[i % 2]
    # best/ is written when validation accuracy improves: surely only at the first (step 5)
    min_step = self.rng.choice(range(5, 40, 5)) if directory == "checkpoints" else 1
    process, log = self.start(workdir)
    step = kill_during_checkpoint_write(process, workdir / directory, min_step=min_step)
    log.close()
    interrupted = bool(step) and bool(tmp_dirs(workdir / directory))
    last = _last_logged_step(workdir)
    outcome = self.rerun(workdir)
    outcome.update(directory=directory, write_step=step, interrupted_write=interrupted,
                   steps_redone=max(last - (outcome.get("resumed_from") or 0), 0))
    return outcome

  def corrupt_latest(self, i: int) -> dict:
    workdir = self.workdir("corrupt_latest")
    shutil.copytree(self.reference_dir, workdir)
    (workdir / "results.json").unlink()
    steps = _steps(workdir / "checkpoints")
    how = CORRUPTIONS[i % len(CORRUPTIONS)]
    corrupt_checkpoint(workdir / "checkpoints" / str(steps[-1]), how, seed=i)
    code, stderr = self.run(workdir)
    outcome = {"corruption": how, "corrupted_step": steps[-1], "rerun_status": code}
    if code != 0:
      return {**outcome, "survived": False, "error": error_lines(stderr)[-1:]}
    resumed, raw = results_without_resume(workdir)
    reported = any(f"checkpoints/{steps[-1]} cannot be restored" in line
                   for line in error_lines(stderr, "warning:"))
    kept = (workdir / "checkpoints" / f"corrupt-{steps[-1]}").is_dir()
    outcome.update(
        survived=resumed == self.results and reported and kept, reported=reported,
        moved_aside=kept, resumed_from=raw["resumed_from_step"],
        checkpoints_lost=int(raw["resumed_from_step"] != steps[-2]),
        steps_redone=steps[-1] - (raw["resumed_from_step"] or 0))
    return outcome

  def sigterm(self) -> dict:
    workdir = self.workdir("sigterm")
    after = self.rng.choice(range(5, 35, 5))
    process, log = self.start(workdir)
    ready = wait_for_path(process, workdir / "checkpoints" / str(after))
    process.send_signal(signal.SIGTERM)
    code = process.wait()
    log.close()
    match = re.search(r"preempted at step (\d+); checkpoint saved",
                      (workdir.parent / "work.log").read_text())
    step = int(match.group(1)) if match else None
    outcome = self.rerun(workdir)
    outcome.update(signal_after_checkpoint=after, exit_status=code, preempted_step=step,
                   steps_redone=0 if step == outcome.get("resumed_from") else None)
    outcome["survived"] = bool(outcome["survived"] and ready and code == PREEMPTED
                               and step == outcome.get("resumed_from"))
    return outcome

  def nan(self, i: int) -> dict:
    workdir = self.workdir("nan")
    code, stderr = self.run(workdir, *listops_flags(self.data, **DIVERGE, **{
        "train.seed": i}))
    lines = error_lines(stderr)
    match = lines and re.search(r"at step (\d+); the last good checkpoint is step (\d+)",
                                lines[0])
    outcome = {"exit_status": code, "error": lines[:1]}
    if not match:
      return {**outcome, "survived": False}
    bad, good = int(match.group(1)), int(match.group(2))
    finite = _all_finite(workdir)
    saved = _steps(workdir / "checkpoints")
    outcome.update(bad_step=bad, last_good=good, all_checkpoints_finite=finite,
                   survived=(code == 2 and len(lines) == 1 and finite and bool(saved)
                             and saved[-1] == good and bad > good
                             and not (workdir / "results.json").exists()))
    return outcome


def _steps(directory: pathlib.Path) -> list[int]:
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _last_logged_step(workdir: pathlib.Path) -> int:
  text = (workdir.parent / "work.log").read_text()
  steps = re.findall(r"\] \[(\d+)\] .*train_loss=", text)
  return int(steps[-1]) if steps else 0


def _phase(last: int, finished: bool) -> str:
  if finished:
    return "after the end"
  if not last:
    return "start-up"
  return "training" if last < TRAIN["train.num_steps"] else "final checkpoint/validation/test"


def _all_finite(workdir: pathlib.Path) -> bool:
  import orbax.checkpoint as ocp

  from rmaat_jax.checkpointing import tree_is_finite

  for directory in ("checkpoints", "best"):
    for step in _steps(workdir / directory):
      state = ocp.StandardCheckpointer().restore(workdir / directory / str(step) / "state")
      if not tree_is_finite(state["params"]):
        return False
  return True


def summarize(trials: list[dict]) -> list[dict]:
  rows = []
  for kind in dict.fromkeys(t["kind"] for t in trials):
    group = [t for t in trials if t["kind"] == kind]
    redone = [t["steps_redone"] for t in group if t.get("steps_redone") is not None]
    rows.append({
        "fault": kind, "trials": len(group), "survived": sum(bool(t["survived"]) for t in group),
        "steps_redone_mean": round(statistics.mean(redone), 1) if redone else None,
        "steps_redone_max": max(redone) if redone else None,
        "checkpoints_lost": sum(t.get("checkpoints_lost", 0) for t in group),
        "seconds": round(sum(t["seconds"] for t in group)), "notes": _notes(kind, group)})
  return rows


def _notes(kind: str, group: list[dict]) -> str:
  def counts(key):
    found = [str(t.get(key)) for t in group]
    return ", ".join(f"{k} x{found.count(k)}" for k in dict.fromkeys(found))

  if kind == "sigkill_random":
    return f"killed during: {counts('phase')}"
  if kind == "sigkill_mid_write":
    hit = sum(bool(t.get("interrupted_write")) for t in group)
    return f"{hit}/{len(group)} kills inside a write; {counts('directory')}"
  if kind == "corrupt_latest":
    return f"reported and moved aside: {sum(bool(t.get('moved_aside')) for t in group)}; " \
           f"{counts('corruption')}"
  if kind == "sigterm":
    return f"exit status {counts('exit_status')}; resumed at the preempted step"
  return f"stopped at step: {counts('bad_step')}; exit status {counts('exit_status')}"


def table(rows: list[dict]) -> str:
  lines = ["| fault | trials | survived | steps redone (mean / max) | checkpoints lost "
           "| time (s) | notes |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    redone = ("-" if r["steps_redone_mean"] is None
              else f"{r['steps_redone_mean']} / {r['steps_redone_max']}")
    lines.append(f"| {r['fault']} | {r['trials']} | {r['survived']}/{r['trials']} | {redone} "
                 f"| {r['checkpoints_lost']} | {r['seconds']} | {r['notes']} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=10, help="random-moment SIGKILL trials")
  parser.add_argument("--others", type=int, default=3,
                      help="trials of each other fault (nan: at most 2)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out_dir", default=str(RESULTS_DIR))
  parser.add_argument("--keep", action="store_true", help="keep the trial workdirs")
  parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores",
                      help="how the results name the machine")
  args = parser.parse_args()

  root = pathlib.Path(tempfile.mkdtemp(prefix="fault_injection_"))
  campaign = Campaign(root, args.seed)
  begin = time.time()
  campaign.reference()
  print(f"reference run: {campaign.duration_s:.0f} s (first checkpoint after "
        f"{campaign.first_checkpoint_s:.0f} s); work in {root}", flush=True)
  plan = ([("sigkill_random", campaign.sigkill_random)] * args.trials
          + [("sigkill_mid_write", lambda i=i: campaign.sigkill_mid_write(i))
             for i in range(args.others)]
          + [("corrupt_latest", lambda i=i: campaign.corrupt_latest(i))
             for i in range(args.others)]
          + [("sigterm", campaign.sigterm)] * args.others
          + [("nan", lambda i=i: campaign.nan(i)) for i in range(min(args.others, 2))])
  trials = []
  for kind, trial in plan:
    start = time.time()
    outcome = trial()
    outcome.update(kind=kind, seconds=round(time.time() - start, 1))
    trials.append(outcome)
    print(json.dumps(outcome), flush=True)

  rows = summarize(trials)
  out = pathlib.Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  # At the top level of the JSON (this file has no "meta"), as before.
  meta = {**provenance(args.machine, module=__spec__.name),
          "seed": args.seed, "train": TRAIN, **listops_config(**TRAIN),
          "reference_run_s": round(campaign.duration_s, 1),
          "total_s": round(time.time() - begin), "reference_results": campaign.results}
  (out / "fault_injection.json").write_text(
      json.dumps({**meta, "summary": rows, "trials": trials}, indent=1) + "\n")
  md = (f"# fault_injection ({meta['date']}, {args.machine})\n\n"
        f"Tiny ListOps model, {TRAIN['train.num_steps']} steps, checkpoint and validation "
        f"every {TRAIN['train.checkpoint_every']}, seed {args.seed}; reference run "
        f"{meta['reference_run_s']} s, campaign {meta['total_s']} s.\n\n{table(rows)}\n\n"
        f"{provenance_line(meta)}\n")
  (out / "fault_injection.md").write_text(md)
  print(md)
  if not args.keep:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
