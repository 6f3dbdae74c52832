"""Per-node wall clocks: a fixed skew, a drift rate, jumps, and the driver's never-backwards clamp.

A node reads its clock as ``raw_us = offset_us + global_us + global_us * drift_ppm / 10**6``:
``offset_us`` is the skew from true (virtual) time, moved by clock jumps; ``drift_ppm`` makes the
clock run fast (> 0) or slow. The core contract promises ``now_ms`` never goes backwards, and the
real driver clamps its clock to keep that promise, so ``now_ms`` does the same: after a backwards
jump the node's time stands still until the raw clock catches up.

Timers are asked for in node-local milliseconds (``Ready.deadline_ms``); ``global_us_when``
turns one into the first virtual instant at which the node's clock reads at least that much. A
jump moves every local deadline, so after a jump the node driver re-schedules its tick.
"""

from __future__ import annotations

ppm_scale = 1_000_000


class NodeClock:
    """One node's clock; see the module docstring."""

    __slots__ = ("offset_us", "drift_ppm", "_last_ms")

    def __init__(self, offset_us: int, drift_ppm: int) -> None:
        assert -ppm_scale < drift_ppm < ppm_scale
        self.offset_us = offset_us
        self.drift_ppm = drift_ppm
        self._last_ms = 0

    def _raw_us(self, global_us: int) -> int:
        return self.offset_us + global_us + global_us * self.drift_ppm // ppm_scale

    def now_ms(self, global_us: int) -> int:
        """The node's wall clock in ms at virtual time ``global_us``, never going backwards."""
        raw_ms = self._raw_us(global_us) // 1000
        if raw_ms > self._last_ms:
            self._last_ms = raw_ms
        return self._last_ms

    def jump(self, delta_us: int) -> None:
        """Step the clock by ``delta_us`` (an NTP step, a VM migration, an operator's mistake)."""
        self.offset_us += delta_us

    def global_us_when(self, local_ms: int, global_now_us: int) -> int:
        """The first virtual time, not before ``global_now_us``, at which ``now_ms`` reads at
        least ``local_ms``."""
        if self._last_ms >= local_ms or self._raw_us(global_now_us) // 1000 >= local_ms:
            return global_now_us
        # Solve offset + t * (scale + drift) / scale >= local_ms * 1000 for t, rounding up; the
        # floor division in _raw_us may still land a microsecond short, hence the loop.
        numerator = (local_ms * 1000 - self.offset_us) * ppm_scale
        global_us = max(global_now_us, -(-numerator // (ppm_scale + self.drift_ppm)))
        while self._raw_us(global_us) // 1000 < local_ms:
            global_us += 1
        return global_us
