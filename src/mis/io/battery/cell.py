"""The per-cycle record every battery reader returns, and the MIT/Severson conventions it defaults to."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The MIT/Severson convention (also BEEP's default for LFP): 1000 points from 3.5 V down to 2.0 V.
MIT_VOLTAGE_GRID = np.linspace(3.5, 2.0, 1000)
MIT_FIRST_CYCLE = 2          # the Qdlin matrices start at cycle 2 (cycle 1 is formation)
MIT_NOMINAL_CAPACITY = 1.1   # Ah, A123 APR18650M1A

# Typical capacities above this many times the nominal one are not Ah (mAh is 1000 x; glitches are single cycles).
MAH_FACTOR = 100


@dataclass
class Cell:
    """One cell's per-cycle data.

    voltage: (P,) the grid, descending (charged -> discharged), volts.
    cycles: (K,) cycle numbers that have a discharge curve, ascending.
    qd: (K, P) discharge capacity in Ah at each grid voltage (0 at the top of the grid).
    temperature: (K, P) degC on the same grid, or None when the source has none.
    capacity: per-cycle discharge capacity {cycle number: Ah}, from curves or the cycler's summary
      (may cover many more cycles than `cycles`, e.g. a BEEP summary of 1612 cycles).
    charge_time: {cycle number: seconds} when the source has it.
    cycle_life: observed life (first cycle below 80 % of nominal) when known, else None.
    discharge_range: (low, high) volts a typical discharge of a raw time series spans, also when no cycle
      covers the grid (so a cell cycled over another window can be told apart from partial data).
    """

    name: str
    source: str
    voltage: np.ndarray
    cycles: np.ndarray
    qd: np.ndarray
    temperature: np.ndarray | None = None
    capacity: dict[int, float] = field(default_factory=dict)
    charge_time: dict[int, float] = field(default_factory=dict)
    cycle_life: int | None = None
    split: str | None = None
    nominal_capacity: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    discharge_range: tuple[float, float] | None = None

    def curve(self, cycle: int) -> np.ndarray:
        index = np.searchsorted(self.cycles, cycle)
        if index >= len(self.cycles) or self.cycles[index] != cycle:
            raise KeyError(cycle)
        return self.qd[index]

    @property
    def last_cycle(self) -> int:
        return int(self.cycles[-1]) if len(self.cycles) else 0
