"""How many requests a run needs before its SLO spec can be decided.

A verdict comes from confidence intervals (``stats``, ``evaluate._status``), so a run too small
for its spec ends ``inconclusive`` however good its numbers are: 30 samples cannot bound a
p99 from above, and 1,000 requests without an error cannot show an error rate under 0.1%.
These are the fewest requests at which each key objective *could* be shown to hold — the
best case, every sample comfortably within the threshold — so a plan below them is known to
be undecidable before any traffic is sent.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from .slis import SLIS
from .spec import Objective, SloSpec


def samples_to_bound(percentile: float, confidence: float) -> int:
    """The fewest samples whose distribution-free interval bounds ``percentile`` above:
    ``(p/100)^n`` must fall below ``(1 - confidence) / 2``."""
    return math.ceil(math.log((1.0 - confidence) / 2.0) / math.log(percentile / 100.0))


def events_to_show(bad_ratio: float, confidence: float) -> int:
    """The fewest events, none of them bad, whose Wilson interval lies under ``bad_ratio``:
    its upper end is ``z² / (n + z²)`` then."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return math.ceil(z * z * (1.0 - bad_ratio) / bad_ratio)


def samples_needed(obj: Objective, confidence: float) -> int:
    """What one objective needs before it can pass (0 for SLIs without an interval)."""
    kind = SLIS[obj.sli].kind
    if kind == "latency" and obj.percentile is not None and obj.op in ("<=", "<"):
        return samples_to_bound(obj.percentile, confidence)
    if kind == "ratio":
        upper = obj.op in ("<=", "<")
        bad = obj.threshold if upper else 1.0 - obj.threshold
        return events_to_show(bad, confidence) if 0.0 < bad < 1.0 else 0
    return 0


def requests_to_decide(spec: SloSpec, shares: dict[str, float]) -> tuple[int, str | None]:
    """The requests over the whole run its key objectives on ``all`` need (``shares``: each
    tier's share of the traffic), and the objective that needs the most."""
    most, which = 0, None
    for obj in spec.objectives:
        if not obj.key or "all" not in obj.phases:
            continue
        share = sum(shares.get(t, 0.0) for t in obj.tiers) if obj.tiers else 1.0
        need = samples_needed(obj, spec.confidence)
        if need and share <= 0:
            continue  # a tier the scenario never sends: check_tiers refuses it
        requests = math.ceil(need / share) if need else 0
        if requests > most:
            most, which = requests, obj.id
    return most, which
