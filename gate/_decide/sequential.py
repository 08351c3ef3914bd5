"""Repeated looks: when the adaptive loop looks, and the confidence each look decides at, so that all looks together
keep the configured error rates (repeated confidence intervals, Jennison & Turnbull 1984).

The adaptive loop runs ``repeats`` runs per case first, then more while a check is undecided, up to the cap, and
stops at the first decided check. Deciding at 95% at many looks gives a check that sits at its bound one chance per
look to cross it: false fails and false passes add up over looks, and the first pass tends to come when the estimate
happens to be low. Intervals that cover the true value at every look at once with probability ``confidence`` keep any
decision based on them — at whichever look the loop stops — within ``1 - confidence``.

**When to look** (``schedule``): each look at least doubles the runs per case (1, 2, 4, …) until doubling once more
would pass half the cap; the last look is at the cap (1 → 10: looks at 1, 2, 4 and 10 runs per case). Each look costs
some power at the last one, and a look that adds only one run a case adds little information (the 10th run of a case
adds 10%); geometric spacing keeps the early looks, where a large change is decided cheaply, and puts the rest of the
information into one last look that decides almost at ``confidence`` itself (95.2% instead of 96.4% with a look after
every run). bench/power.py measures both.

**At what level**: in the group-sequential model the statistic at look k is Z_k = S(t_k) / √t_k for a Brownian
motion S, with the information t_k proportional to the runs per case so far. The boundary has O'Brien & Fleming's
(1979) shape, c·√(t_K / t_k): strict at the first looks, close to the single-look level at the last. c is the
(confidence)-quantile of max_k Z_k / √(t_K / t_k), found by seeded simulation (400,000 paths: ±0.005) once per
(confidence, looks) in a process. For looks at 1, 2, 4, 10 runs per case at 95%: c = 1.66, so the looks decide at
99.99...%, 99.95%, 99.56% and 95.2% (one-sided).
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

__all__ = ["look_confidence", "next_look", "schedule"]

PATHS = 400_000
SEED = 20_261_130


def schedule(first: int, cap: int, least: int = 1) -> tuple[int, ...]:
    """The runs per case at which an adaptive run with ``first`` runs a case in its first round and at most ``cap``
    decides: ``first``, then doubling while the double stays within half the cap, then ``cap``. Looks before
    ``least`` runs a case are left out (a per-case check needs 2 runs to know the noise)."""
    looks = [first]
    while looks[-1] < cap:
        double = 2 * looks[-1]
        looks.append(double if double <= cap / 2 else cap)
    kept = tuple(k for k in looks if k >= least)
    return kept or (max(cap, first),)


def next_look(runs: int, first: int, cap: int) -> int:
    """Runs per case at the look after ``runs`` (``cap`` once past every look)."""
    return next((k for k in schedule(first, cap) if k > runs), cap)


@functools.lru_cache(maxsize=32)
def _critical(confidence: float, looks: tuple[int, ...]) -> float:
    """c for looks at ``looks`` runs per case (increasing)."""
    import numpy as np

    times = np.asarray(looks, dtype=np.float64)
    cap = times[-1]
    steps = np.diff(np.concatenate([[0.0], times]))
    rng = np.random.default_rng(SEED)
    peak = np.full(PATHS, -np.inf)
    walk = np.zeros(PATHS)
    for t, step in zip(times, steps, strict=True):  # one look at a time: memory stays at a few vectors of PATHS
        walk += rng.standard_normal(PATHS) * np.sqrt(step)
        np.maximum(peak, walk / np.sqrt(t) / np.sqrt(cap / t), out=peak)
    return float(np.quantile(peak, confidence))


def look_confidence(confidence: float, runs: int, first: int, cap: int, least: int = 1) -> float:
    """The one-sided confidence the look at ``runs`` runs per case decides at, for the looks of
    ``schedule(first, cap, least)``, so that all looks together hold ``confidence``. One look: ``confidence`` itself.
    A look off the schedule (a run stopped early by a budget) decides at the boundary's level for its runs."""
    looks = schedule(first, cap, least)
    if len(looks) == 1:
        return confidence
    boundary = _critical(confidence, looks) * math.sqrt(looks[-1] / max(min(runs, looks[-1]), looks[0]))
    return max(confidence, NormalDist().cdf(boundary))
