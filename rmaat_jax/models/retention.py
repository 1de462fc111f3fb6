"""Memory retention factor RF(t, T) from a neuron-astrocyte macro model (METHOD.md section 4).

One segment is one short-term-plasticity cycle. A small macro model (synapse s, astrocytic
short-term process p_s, long-term process p_l) is simulated once, in plain Python floats
(cached; never inside a training step), to get the saturating long-term curve p_l(tau),
normalised so that its capacity is 1:

  tau_s  ds/dt   = -beta s + theta(x_pre) theta(x_post) + psi(p_s)
  tau_ps dp_s/dt = -gamma_s p_s + kappa(s)
  tau_pl dp_l/dt = -gamma_l p_l + kappa(s)

Decisions:
- Time unit = one cycle; classical RK4 with a fixed step of 1/STEPS_PER_CYCLE. 1920 =
  2^7 * 3 * 5 steps put tau = t * 6 / T exactly on the grid whenever T divides 11520 (e.g.
  1-6, 8, 9, 10, 12, 16, 32, ..., 256; not 7), so common T need no interpolation at all.
- Drive: one smooth burst per cycle, x(t) = exp(8 (cos(2 pi t) - 1)), peak 1 at each cycle
  start; x_post = x_pre (Hebbian coincidence).
- The fast variables (s, p_s) start on their periodic orbit: p_l does not feed back into
  them, so they are first run alone for WARMUP_CYCLES from zero, ending at phase 0. A start
  from rest would add a rise time that makes the first window smaller than the second at
  fine segmentations, breaking "RF strictly decreasing". p_l starts at 0.
- The astrocyte's short-term process keeps the synapse potentiated between bursts (psi
  feedback), so kappa(s) stays in its saturated range and p_l grows smoothly.
- Capacity = the limit of p_l sampled at cycle boundaries. p_l enters linearly, so with
  periodic fast variables one RK4 cycle maps p_l(n) -> A p_l(n) + p_l(1), A = a^STEPS
  (a = the RK4 amplification factor of the decay term). The limit is p_l(1) / (1 - A),
  exact for the discrete scheme, and normalised p_l(n) = 1 - A^n at every boundary, with
  A = exp(-1 / TAU_L) up to RK4 error (~1e-15): p_l(HORIZON_CYCLES) = 0.95.
- p_l at fractional tau: np.interp on the fine grid (error <= ~2e-8 between grid points).
- Streaming needs p_l at boundaries past the simulated horizon; there the same exact
  recurrence gives Delta(t + 1) = A Delta(t), so no long simulation is needed (a test checks
  this against a direct longer simulation).

RF(t, T) = Delta_t / sum_i Delta_i with Delta_t = p_l(t * 6 / T) - p_l((t - 1) * 6 / T).
Note: METHOD.md also claims "for fixed t, RF(t, T) decreases as T grows". That is false for
t >= 2 for any curve of this shape (e.g. RF(2, 2) ~ 0.18 < RF(2, 3) ~ 0.245 for
1 - exp(-tau / 2)). What holds and is tested: RF(1, T) and RF(T, T) decrease with T.
"""

from __future__ import annotations

import functools
import math

import numpy as np

HORIZON_CYCLES = 6  # p_l reaches 95% of capacity after this many cycles
STEPS_PER_CYCLE = 1920  # RK4 steps per cycle; see the module docstring for the choice
WARMUP_CYCLES = 16  # slowest fast decay ~exp(-5 n) (tau_ps = 0.2): converged to roundoff
MODES = ("paper", "streaming", "none")
DRIVES = ("pulse", "constant")

# Synapse: tau_s is short (0.05 cycle) so s follows each burst; beta = 1 sets its scale.
TAU_S = 0.05
BETA = 1.0
# Short-term process: slower than the synapse (0.2 cycle), fast enough to settle in a cycle.
TAU_PS = 0.2
GAMMA_S = 1.0
# Long-term process: 1 - exp(-HORIZON_CYCLES / TAU_L) = 0.95 fixes the saturation time.
GAMMA_L = 1.0
TAU_L = HORIZON_CYCLES / math.log(20.0)
TAU_PL = TAU_L
# Burst sharpness: x > 0.5 for about 13% of each cycle.
BURST_SHARPNESS = 8.0
# Sigmoid gains and thresholds. theta: a burst is "on" above x = 0.5. psi: p_s above 0.5
# potentiates the synapse. kappa: steep (gain 20) so that a potentiated synapse (s ~ 1)
# drives both processes at their saturated rate ~1.
THETA_GAIN, THETA_MID = 10.0, 0.5
PSI_GAIN, PSI_MID = 10.0, 0.5
KAPPA_GAIN, KAPPA_MID = 20.0, 0.5


def _sigmoid(z: float) -> float:
  # Arguments here stay within [-20, 40], so the plain form cannot overflow.
  return 1.0 / (1.0 + math.exp(-z))


def _drive(t: float, drive: str) -> float:
  if drive == "constant":
    return 1.0
  return math.exp(BURST_SHARPNESS * (math.cos(2.0 * math.pi * t) - 1.0))


def _derivatives(t: float, s: float, ps: float, pl: float,
                 drive: str) -> tuple[float, float, float]:
  """Right-hand side of the macro model (x_post = x_pre, so theta enters squared)."""
  theta = _sigmoid(THETA_GAIN * (_drive(t, drive) - THETA_MID))
  psi = _sigmoid(PSI_GAIN * (ps - PSI_MID))
  kappa = _sigmoid(KAPPA_GAIN * (s - KAPPA_MID))
  return ((-BETA * s + theta * theta + psi) / TAU_S,
          (-GAMMA_S * ps + kappa) / TAU_PS,
          (-GAMMA_L * pl + kappa) / TAU_PL)


def _rk4(state: tuple[float, float, float], t0: float, num_steps: int, h: float,
         drive: str, record: list[tuple[float, float, float]] | None = None
         ) -> tuple[float, float, float]:
  """Classical RK4 from t0; appends every state to `record` when given."""
  s, ps, pl = state
  for n in range(num_steps):
    t = t0 + n * h
    a1, b1, c1 = _derivatives(t, s, ps, pl, drive)
    a2, b2, c2 = _derivatives(t + h / 2, s + h / 2 * a1, ps + h / 2 * b1,
                              pl + h / 2 * c1, drive)
    a3, b3, c3 = _derivatives(t + h / 2, s + h / 2 * a2, ps + h / 2 * b2,
                              pl + h / 2 * c2, drive)
    a4, b4, c4 = _derivatives(t + h, s + h * a3, ps + h * b3, pl + h * c3, drive)
    s += h / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
    ps += h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
    pl += h / 6 * (c1 + 2 * c2 + 2 * c3 + c4)
    if record is not None:
      record.append((s, ps, pl))
  return s, ps, pl


@functools.cache
def simulate_macro_model(num_cycles: int, drive: str = "pulse",
                         steps_per_cycle: int = STEPS_PER_CYCLE
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Simulates the macro model for `num_cycles` cycles (cached).

  Returns (times [n + 1], states [n + 1, 3]) with columns (s, p_s, p_l), raw (not normalised)
  and n = num_cycles * steps_per_cycle. The fast variables start on their periodic orbit
  (or, for drive="constant", at their fixed point); p_l starts at 0. Arrays are read-only
  because they are shared through the cache.
  """
  if drive not in DRIVES:
    raise ValueError(f"drive must be one of {DRIVES}, got {drive!r}")
  if num_cycles < 1 or steps_per_cycle < 1:
    raise ValueError(f"num_cycles and steps_per_cycle must be >= 1, got "
                     f"{num_cycles!r}, {steps_per_cycle!r}")
  h = 1.0 / steps_per_cycle
  # Warm-up of the fast variables alone (p_l is discarded), ending at a cycle start. Under
  # constant drive this converges to the fixed point, so kappa is constant afterwards.
  s, ps, _ = _rk4((0.0, 0.0, 0.0), 0.0, WARMUP_CYCLES * steps_per_cycle, h, drive)
  # The drive has period 1, so restarting the clock at 0 keeps the phase.
  record = [(s, ps, 0.0)]
  _rk4((s, ps, 0.0), 0.0, num_cycles * steps_per_cycle, h, drive, record)
  times = np.arange(num_cycles * steps_per_cycle + 1) / steps_per_cycle
  states = np.asarray(record, dtype=np.float64)
  times.flags.writeable = False
  states.flags.writeable = False
  return times, states


def cycle_decay(steps_per_cycle: int = STEPS_PER_CYCLE) -> float:
  """A: factor by which one simulated cycle shrinks p_l's distance to capacity.

  RK4 multiplies a linear decay by a = 1 - z + z^2/2 - z^3/6 + z^4/24 per step (z = step
  times gamma_l / tau_pl); equals exp(-1 / TAU_L) up to ~1e-15.
  """
  z = GAMMA_L / (TAU_PL * steps_per_cycle)
  a = 1.0 - z + z * z / 2 - z ** 3 / 6 + z ** 4 / 24
  return a ** steps_per_cycle


def long_term_curve(num_cycles: int = HORIZON_CYCLES, drive: str = "pulse",
                    steps_per_cycle: int = STEPS_PER_CYCLE
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(times, p_l / capacity) on the fine grid; capacity = limit at cycle boundaries."""
  times, states = simulate_macro_model(num_cycles, drive, steps_per_cycle)
  pl = states[:, 2]
  # Boundary recurrence p(n + 1) = A p(n) + p(1) (see module docstring) has limit p(1)/(1-A).
  capacity = pl[steps_per_cycle] / (1.0 - cycle_decay(steps_per_cycle))
  return times, pl / capacity


def ltp_curve(taus: np.ndarray | float, drive: str = "pulse") -> np.ndarray:
  """Normalised long-term process state p_l(tau) at the given taus (in cycles, >= 0)."""
  taus = np.asarray(taus, dtype=np.float64)
  if taus.size and taus.min() < 0:
    raise ValueError(f"taus must be >= 0, got min {taus.min()!r}")
  top = float(taus.max()) if taus.size else 0.0
  num_cycles = max(HORIZON_CYCLES, math.ceil(top))
  times, curve = long_term_curve(num_cycles, drive)
  return np.interp(taus, times, curve)


def _paper_factors(num_segments: int) -> np.ndarray:
  taus = np.arange(num_segments + 1) * (HORIZON_CYCLES / num_segments)
  deltas = np.diff(ltp_curve(taus))
  return deltas / deltas.sum()


def _streaming_factors(num_segments: int) -> np.ndarray:
  simulated = min(num_segments, HORIZON_CYCLES)
  deltas = np.diff(ltp_curve(np.arange(simulated + 1, dtype=np.float64)))
  if num_segments > simulated:
    # Past the simulated horizon the exact boundary recurrence continues the sequence.
    powers = cycle_decay() ** np.arange(1, num_segments - simulated + 1)
    deltas = np.concatenate([deltas, deltas[-1] * powers])
  return deltas


def retention_factors(num_segments: int, mode: str = "paper") -> np.ndarray:
  """Retention factor RF(t) for segments t = 1..num_segments: float64 array [T].

  mode="paper": the T segments share the 6-cycle horizon, normalised to sum to 1.
  mode="streaming": one segment per cycle, RF(t) = p_l(t) - p_l(t - 1); independent of T
  (a prefix of any longer run) and sums to at most 1.
  mode="none": all ones (no retention scaling).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  is_int = isinstance(num_segments, (int, np.integer)) and not isinstance(num_segments, bool)
  if not is_int or num_segments < 1:
    raise ValueError(f"num_segments must be an integer >= 1, got {num_segments!r}")
  num_segments = int(num_segments)
  if mode == "none":
    return np.ones(num_segments, dtype=np.float64)
  if mode == "paper":
    return _paper_factors(num_segments)
  return _streaming_factors(num_segments)
