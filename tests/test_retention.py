"""Tests for the memory retention factor (docs/method.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from rmaat_jax.models.retention import (
  HORIZON_CYCLES,
  STEPS_PER_CYCLE,
  TAU_L,
  cycle_decay,
  long_term_curve,
  ltp_curve,
  retention_factors,
  simulate_macro_model,
)

PAPER_TS = (1, 2, 3, 4, 5, 8, 16, 32, 64, 128)


def _closed_form(taus: np.ndarray) -> np.ndarray:
  return 1.0 - np.exp(-np.asarray(taus) / TAU_L)


# --- the long-term curve ------------------------------------------------------------------

@pytest.mark.parametrize("num_points", [7, 25, 121])
def test_constant_drive_matches_closed_form(num_points: int) -> None:
  # These grids sit on the RK4 grid, so only integration error (~1e-13) remains.
  taus = np.linspace(0.0, HORIZON_CYCLES, num_points)
  np.testing.assert_allclose(ltp_curve(taus, drive="constant"), _closed_form(taus),
                             rtol=0, atol=1e-8)


def test_constant_drive_on_fine_grid() -> None:
  times, curve = long_term_curve(HORIZON_CYCLES, drive="constant")
  np.testing.assert_allclose(curve, _closed_form(times), rtol=0, atol=1e-9)


def test_tau_l_sets_95_percent_at_horizon() -> None:
  assert _closed_form(HORIZON_CYCLES) == pytest.approx(0.95, abs=1e-12)
  assert cycle_decay() == pytest.approx(np.exp(-1.0 / TAU_L), abs=1e-12)


def test_pulse_curve_reaches_95_percent_and_increases() -> None:
  times, curve = long_term_curve(HORIZON_CYCLES)
  assert times[-1] == HORIZON_CYCLES and curve[0] == 0.0
  assert abs(curve[-1] - 0.95) <= 0.01
  assert np.all(np.diff(curve) > 0)
  assert ltp_curve(float(HORIZON_CYCLES)) == pytest.approx(curve[-1], abs=0)


def test_pulse_curve_capacity_is_one() -> None:
  num_cycles = 32
  times, curve = long_term_curve(num_cycles)
  boundaries = curve[::STEPS_PER_CYCLE]
  # With periodic fast variables the boundary values follow 1 - A^n exactly ...
  np.testing.assert_allclose(boundaries, 1.0 - cycle_decay() ** np.arange(num_cycles + 1),
                             rtol=0, atol=1e-12)
  # ... so they tend to the capacity 1 from below.
  assert np.all(np.diff(boundaries) > 0)
  assert 1.0 - 1e-6 < boundaries[-1] < 1.0


def test_astrocyte_keeps_synapse_potentiated() -> None:
  # The mechanism: psi(p_s) holds s above kappa's threshold between bursts, so kappa stays
  # saturated and p_l grows smoothly instead of in steps.
  _, states = simulate_macro_model(HORIZON_CYCLES)
  assert states[:, 0].min() > 0.9
  # The fast variables start on their periodic orbit: same state at every cycle start.
  np.testing.assert_allclose(states[STEPS_PER_CYCLE, :2], states[0, :2], rtol=0, atol=1e-12)


def test_simulation_is_cached_and_read_only() -> None:
  first = simulate_macro_model(HORIZON_CYCLES)
  assert simulate_macro_model(HORIZON_CYCLES) is first
  with pytest.raises(ValueError):
    first[1][0, 0] = 1.0


# --- paper mode: segment t is cycle t --------------------------------------------------

@pytest.mark.parametrize("num_segments", PAPER_TS)
def test_paper_factors_properties(num_segments: int) -> None:
  rf = retention_factors(num_segments)
  assert rf.dtype == np.float64 and rf.shape == (num_segments,)
  assert abs(rf.sum() - 1.0) <= 1e-12
  assert np.all(rf > 0)
  assert np.all(np.diff(rf) < 0)


def test_single_segment_keeps_everything() -> None:
  np.testing.assert_array_equal(retention_factors(1), [1.0])


def test_paper_is_the_default_mode() -> None:
  np.testing.assert_array_equal(retention_factors(8), retention_factors(8, "paper"))


def test_paper_curve_moves_down_as_num_segments_grows() -> None:
  # The paper: RF(t, T + 1) < RF(t, T) for every t <= T.
  for num_segments in range(1, 65):
    shorter = retention_factors(num_segments)
    longer = retention_factors(num_segments + 1)
    assert np.all(longer[:num_segments] < shorter), num_segments


def test_paper_matches_the_geometric_closed_form() -> None:
  # Cycle boundaries of the simulated curve follow 1 - A^n exactly (periodic fast
  # variables), so RF(t, T) = r^(t-1) (1 - r) / (1 - r^T) with r = exp(-1 / TAU_L).
  r = np.exp(-1.0 / TAU_L)
  for num_segments in (1, 2, 3, 6, 7, 16, 64, 300):
    t = np.arange(1, num_segments + 1)
    expected = r ** (t - 1) * (1 - r) / (1 - r ** num_segments)
    # rtol: increments ~1e-9 (cycle ~40) carry float64 differencing error ~1e-6.
    np.testing.assert_allclose(retention_factors(num_segments), expected, rtol=2e-6)


def test_paper_factors_come_from_a_simulation_of_t_cycles() -> None:
  # The first T increments of a direct T-cycle simulation, normalised (no shortcut).
  for num_segments in (3, 9):
    _, curve = long_term_curve(num_segments)
    deltas = np.diff(curve[::STEPS_PER_CYCLE])
    np.testing.assert_allclose(retention_factors(num_segments), deltas / deltas.sum(),
                               rtol=1e-12)


# --- stretched mode: T segments spread over the 6-cycle horizon ---------------------------

@pytest.mark.parametrize("num_segments", PAPER_TS)
def test_stretched_factors_properties(num_segments: int) -> None:
  rf = retention_factors(num_segments, "stretched")
  assert abs(rf.sum() - 1.0) <= 1e-12
  assert np.all(rf > 0) and np.all(np.diff(rf) < 0)


def test_stretched_is_not_monotone_in_num_segments() -> None:
  # Why "paper" is not this reading: with the horizon shared, RF(2, 2) = (p(6) - p(3)) /
  # p(6) ~ 0.18 < RF(2, 3) = (p(4) - p(2)) / p(6) ~ 0.245. First and last still fall.
  rf_2_2, rf_2_3 = (retention_factors(t, "stretched")[1] for t in (2, 3))
  assert rf_2_3 > rf_2_2
  p = _closed_form
  assert rf_2_2 == pytest.approx((p(6) - p(3)) / p(6), abs=1e-4)
  assert rf_2_3 == pytest.approx((p(4) - p(2)) / p(6), abs=1e-4)
  ts = range(1, 65)
  first = np.array([retention_factors(t, "stretched")[0] for t in ts])
  last = np.array([retention_factors(t, "stretched")[-1] for t in ts])
  assert np.all(np.diff(first) < 0) and np.all(np.diff(last) < 0)


# --- streaming mode -----------------------------------------------------------------------

@pytest.mark.parametrize("num_segments", [1, 2, 5, 6, 7, 13, 40, 1000])
def test_streaming_properties(num_segments: int) -> None:
  rf = retention_factors(num_segments, "streaming")
  assert rf.dtype == np.float64 and rf.shape == (num_segments,)
  assert np.all(rf >= 0)
  assert rf.sum() <= 1.0
  above = rf[rf > 1e-12]
  assert np.all(np.diff(above) < 0)


def test_streaming_sum_never_exceeds_one() -> None:
  for num_segments in range(1, 41):
    assert retention_factors(num_segments, "streaming").sum() <= 1.0


@pytest.mark.parametrize("extra", [1, 7, 40])
def test_streaming_does_not_depend_on_num_segments(extra: int) -> None:
  for num_segments in range(1, 41):
    short = retention_factors(num_segments, "streaming")
    long = retention_factors(num_segments + extra, "streaming")
    np.testing.assert_array_equal(short, long[:num_segments])


def test_streaming_extension_matches_longer_simulation() -> None:
  # Beyond the horizon the factors come from the exact boundary recurrence; check it
  # against a direct 16-cycle simulation.
  num_cycles = 16
  _, curve = long_term_curve(num_cycles)
  direct = np.diff(curve[::STEPS_PER_CYCLE])
  np.testing.assert_allclose(retention_factors(num_cycles, "streaming"), direct,
                             rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_segments", [2, HORIZON_CYCLES, 16])
def test_streaming_is_paper_unnormalised(num_segments: int) -> None:
  # Both map segment t to cycle t; paper divides by the sum, p_l(T).
  level = ltp_curve(float(num_segments))
  np.testing.assert_allclose(retention_factors(num_segments, "streaming"),
                             retention_factors(num_segments) * level, rtol=1e-9)


# --- mode none and argument checks --------------------------------------------------------

@pytest.mark.parametrize("num_segments", [1, 3, 64])
def test_none_mode_is_all_ones(num_segments: int) -> None:
  rf = retention_factors(num_segments, "none")
  assert rf.dtype == np.float64
  np.testing.assert_array_equal(rf, np.ones(num_segments))


@pytest.mark.parametrize("mode", ["Paper", "", "exponential"])
def test_unknown_mode_raises(mode: str) -> None:
  with pytest.raises(ValueError, match=rf"mode.*'paper'.*got {mode!r}"):
    retention_factors(4, mode)


@pytest.mark.parametrize("num_segments", [0, -3])
@pytest.mark.parametrize("mode", ["paper", "stretched", "streaming", "none"])
def test_bad_num_segments_raises(num_segments: int, mode: str) -> None:
  with pytest.raises(ValueError, match=rf"num_segments.*>= 1.*got {num_segments}"):
    retention_factors(num_segments, mode)


def test_bad_drive_raises() -> None:
  with pytest.raises(ValueError, match="drive.*'pulse'.*'sideways'"):
    simulate_macro_model(2, drive="sideways")


def test_factors_stay_normal_float32_up_to_the_limit_and_are_refused_past_it() -> None:
  from rmaat_jax.errors import ConfigError
  from rmaat_jax.models import ModelConfig

  tiny = np.finfo(np.float32).tiny
  for mode in ("paper", "streaming"):
    # Every factor of an accepted config is a normal float32 (never silently 0 or subnormal
    # once the model casts it to the memory's dtype).
    assert retention_factors(174, mode).astype(np.float32).min() >= tiny
    assert retention_factors(175, mode).astype(np.float32).min() < tiny
  base = dict(vocab_size=5, num_classes=2, pad_id=0, dual_encoder=False)
  ModelConfig.from_config({**base, "num_segments": 174, "seq_len": 174})
  with pytest.raises(ConfigError, match=r"model\.retention='paper' with model\.num_segments"
                                        r"=207: .* or at most 174 segments"):
    ModelConfig.from_config({**base, "num_segments": 207, "seq_len": 207})
  with pytest.raises(ConfigError, match=r"model\.retention_backward='paper'"):
    ModelConfig.from_config({**base, "num_segments": 300, "seq_len": 300,
                             "retention": "none", "retention_backward": "paper"})
  ModelConfig.from_config({**base, "num_segments": 4096, "seq_len": 4096, "retention": "none"})


@pytest.mark.parametrize("task, preset, warns", [
    ("lra_text", "", True),  # 8 segments: the first segment's memory reaches the last x 5e-8
    ("lra_listops", "", True),  # 4 segments: x 0.021, where the recall benchmark found none
    ("memory_recall", "", False),  # retention none
    ("lra_listops", "rmt", False),
])
def test_a_config_past_the_measured_reach_warns_once(task, preset, warns, caplog) -> None:
  from rmaat_jax import configs
  from rmaat_jax.config_checks import NO_CARRY_REACH, memory_reach, validate_config

  caplog.set_level("WARNING")
  validate_config(configs.load(task, preset))
  lines = [r.getMessage() for r in caplog.records if "model.retention" in r.getMessage()]
  assert len(lines) == int(warns), lines
  if warns:
    assert "model.retention=none" in lines[0] and "recall benchmark" in lines[0]
  assert memory_reach("paper", 3) > NO_CARRY_REACH >= memory_reach("paper", 4)
  assert memory_reach("none", 50) == 1.0 and memory_reach("paper", 1) == 1.0
