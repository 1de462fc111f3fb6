"""Memory retention factor RF(t, T) from a neuron-astrocyte macro model.

`retention_factors(T, mode)` gives the factor that scales the memory after each of T
segments. It comes from the long-term process p_l of a small ODE model (synapse, astrocytic
short- and long-term processes), integrated with RK4 in plain Python floats and cached, never
inside a training step. The model, the modes, every constant and the numerical choices:
docs/method.md section 4.
"""

from __future__ import annotations

import functools
import math

import numpy as np

HORIZON_CYCLES = 6  # p_l reaches 95% of capacity after this many cycles
STEPS_PER_CYCLE = 1920  # RK4 steps per cycle; why 1920: docs/method.md section 4.2
WARMUP_CYCLES = 16  # slowest fast decay ~exp(-5 n) (tau_ps = 0.2): converged to roundoff
MODES = ("paper", "stretched", "streaming", "none")
MAX_SIMULATED = 64  # cycles; past ~40 the increments are below float64's resolution
RESOLVED_INCREMENT = 1e-9
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
  # Boundary recurrence p(n + 1) = A p(n) + p(1) (docs/method.md 4.2) has limit p(1)/(1-A).
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


def cycle_increments(num_cycles: int, drive: str = "pulse") -> np.ndarray:
  """Delta_t = p_l(t) - p_l(t - 1) for cycles t = 1..num_cycles, from the simulation.

  Increments below RESOLVED_INCREMENT (cycle ~40 on) are differences of values within 1e-9
  of the capacity, which float64 no longer resolves (relative error > 1e-6, then noise and
  zeros); from there each cycle's increment is the previous one times the simulated
  cycle's decay A, the exact map of the integrator for a linear p_l.
  """
  # Nearby T share one cached simulation (rounded up to a power of two); the curve on
  # [0, n] does not depend on how far the simulation runs past n.
  simulated = min(max(HORIZON_CYCLES, 1 << (num_cycles - 1).bit_length()), MAX_SIMULATED)
  _, curve = long_term_curve(simulated, drive)
  deltas = np.diff(curve[::STEPS_PER_CYCLE])[:num_cycles]
  unresolved = np.flatnonzero(deltas < RESOLVED_INCREMENT)
  resolved = int(unresolved[0]) if unresolved.size else len(deltas)
  if resolved == num_cycles:
    return deltas
  powers = cycle_decay() ** np.arange(1, num_cycles - resolved + 1)
  return np.concatenate([deltas[:resolved], deltas[resolved - 1] * powers])


def _paper_factors(num_segments: int) -> np.ndarray:
  deltas = cycle_increments(num_segments)
  return deltas / deltas.sum()


def _stretched_factors(num_segments: int) -> np.ndarray:
  taus = np.arange(num_segments + 1) * (HORIZON_CYCLES / num_segments)
  deltas = np.diff(ltp_curve(taus))
  return deltas / deltas.sum()


def retention_factors(num_segments: int, mode: str = "paper") -> np.ndarray:
  """Retention factor RF(t) for segments t = 1..num_segments: float64 array [T].

  mode="paper": segment t = cycle t, RF(t, T) = Delta_t / sum_i Delta_i (sums to 1).
  mode="stretched": the T segments share the 6-cycle horizon, normalised to sum to 1.
  mode="streaming": segment t = cycle t, RF(t) = Delta_t; independent of T (a prefix of
  any longer run) and sums to at most 1.
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
  factors = {"paper": _paper_factors, "stretched": _stretched_factors,
             "streaming": cycle_increments}
  return factors[mode](num_segments)
