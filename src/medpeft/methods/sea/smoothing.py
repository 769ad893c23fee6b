"""Turning noisy audit utilities into stable scores: outlier clipping, EMA, median - lambda * IQR.

Each raw utility is first clipped to the site's recent raw values (median +/- ``clip`` x IQR,
once ``window`` of them exist): the issue's order "EMA, then median - lambda * IQR" alone lets one
huge outlier lift every later EMA value of the window and flip a ranking for several rounds.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field


def robust_score(values: list[float], lam: float) -> float:
    """median - lam * IQR of ``values`` (IQR 0 for fewer than two values)."""
    if len(values) < 2:
        return values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return med - lam * (q3 - q1)


@dataclass
class _Track:
    raw: deque
    ema_values: deque
    ema: float | None = None


@dataclass
class UtilitySmoother:
    """Per-site smoothed utilities: ``update(name, u)`` after each audit, ``score(name)`` to rank."""

    decay: float = 0.9
    window: int = 5
    lam: float = 0.25
    clip: float = 3.0
    tracks: dict[str, _Track] = field(default_factory=dict)

    def _track(self, name: str) -> _Track:
        if name not in self.tracks:
            self.tracks[name] = _Track(deque(maxlen=self.window), deque(maxlen=self.window))
        return self.tracks[name]

    def update(self, name: str, utility: float) -> float:
        """Feed one raw utility; returns the value after clipping (what entered the EMA)."""
        t = self._track(name)
        value = utility
        if len(t.raw) == self.window:
            q1, med, q3 = statistics.quantiles(t.raw, n=4, method="inclusive")
            spread = max(q3 - q1, 1e-4 * max(abs(med), 1e-6))
            value = min(max(utility, med - self.clip * spread), med + self.clip * spread)
        t.raw.append(utility)
        t.ema = value if t.ema is None else self.decay * t.ema + (1 - self.decay) * value
        t.ema_values.append(t.ema)
        return value

    def score(self, name: str) -> float | None:
        """The robust score of a site, or None if it was never audited."""
        t = self.tracks.get(name)
        return None if t is None or t.ema is None else robust_score(list(t.ema_values), self.lam)

    def forget(self, name: str) -> None:
        self.tracks.pop(name, None)

    def to_dict(self) -> dict:
        """The tracks as plain lists (to keep a smoother between federated rounds)."""
        return {n: {"raw": list(t.raw), "ema_values": list(t.ema_values), "ema": t.ema}
                for n, t in self.tracks.items()}

    def load_dict(self, tracks: dict) -> UtilitySmoother:
        """Restore tracks written by ``to_dict``; returns self."""
        self.tracks = {n: _Track(deque(t["raw"], maxlen=self.window),
                                 deque(t["ema_values"], maxlen=self.window), t["ema"])
                       for n, t in tracks.items()}
        return self
