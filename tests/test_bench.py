"""The benchmark scripts' own arithmetic (the figures they print are measured, not tested)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_by_phase_splits_pairs_at_a_share_of_the_highest_probe():
    by_phase = _bench("animate").by_phase
    # (ms per frame, probe GFLOP/s in G's format, best probe): two fast pairs, three slow ones
    pairs = [(50.0, 1600.0, 1600.0), (60.0, 1300.0, 1300.0), (90.0, 800.0, 800.0),
             (80.0, 760.0, 900.0), (100.0, 700.0, 700.0)]
    got = by_phase(pairs, gflop=64.0)
    assert got["phase_top_probe_gflops"] == 1600.0
    assert got["fast_phase_pairs"] == 2 and got["slow_phase_pairs"] == 3
    assert got["fast_phase_ms_per_frame"] == 55.0
    assert got["slow_phase_ms_per_frame"] == 90.0
    # 64 GFLOP in 50 ms against 1600 GFLOP/s is 80%; in 60 ms against 1300, 82.1%: median 81.0
    assert got["fast_phase_pct_of_conv_peak"] == pytest.approx(81.0, abs=0.05)
    # 64/0.09/800 = 88.9, 64/0.08/760 = 105.3, 64/0.1/700 = 91.4: median 91.4
    assert got["slow_phase_pct_of_conv_peak"] == pytest.approx(91.4, abs=0.05)


def test_by_phase_of_a_steady_run_has_no_slow_pairs():
    got = _bench("animate").by_phase([(50.0, 1500.0, 1500.0), (52.0, 1450.0, 1500.0)], gflop=60.0)
    assert got["fast_phase_pairs"] == 2 and got["slow_phase_pairs"] == 0
    assert got["slow_phase_ms_per_frame"] is None and got["slow_phase_pct_of_conv_peak"] is None


def test_by_phase_against_the_runs_highest_probe():
    """A mode that ran while the machine was slow throughout is all slow against the run's top."""
    got = _bench("animate").by_phase([(100.0, 700.0, 700.0), (104.0, 690.0, 700.0)], gflop=60.0, top=1500.0)
    assert got["fast_phase_pairs"] == 0 and got["slow_phase_pairs"] == 2
    assert got["fast_phase_pct_of_conv_peak"] is None and got["slow_phase_ms_per_frame"] == 102.0
