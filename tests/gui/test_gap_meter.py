"""The stall meter the GUI tests rely on catches a GUI thread that works or sleeps, whatever else runs."""

from __future__ import annotations

import time

import pytest
from conftest import GapMeter
from PySide6.QtCore import QTimer


def spin(seconds: float) -> None:
    """Work for ``seconds`` of this thread's CPU time: under load it takes longer in wall time, and the meter
    leaves out the time it waited for a CPU (a wall-clock spin measured only 203 ms of 300 so)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.parametrize("block", [time.sleep, spin], ids=["sleeping", "working"])
def test_a_blocked_gui_thread_is_a_stall(qtbot, block):
    meter = GapMeter()
    meter.start()
    qtbot.wait(50)
    QTimer.singleShot(0, lambda: block(0.3))
    qtbot.wait(400)
    meter.stop()
    assert meter.longest_ms >= 250
    assert meter.longest_wall_ms >= meter.longest_ms
    assert "block(0.3)" in meter.longest_where  # the watchdog saw where the GUI thread was
    assert "kernel state " + ("S" if block is time.sleep else "R") in meter.longest_where


def test_an_idle_gui_thread_has_no_stall(qtbot):
    meter = GapMeter()
    meter.start()
    qtbot.wait(300)
    meter.stop()
    assert meter.ticks >= 10
    assert meter.longest_ms < 100
