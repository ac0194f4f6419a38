"""Prompt lengths: what the load meant to send against what the server says it got.

Every record keeps the intended prompt tokens (in the target's tokens, counted by its
``/tokenize``, a tokenizer file, or estimated as one per word) and the server-reported
``usage.prompt_tokens``. A report must show where they differ: a TTFT-vs-prompt-length figure
is only as good as the lengths on its axis.
"""

from __future__ import annotations

import numpy as np

from .records import Records
from .result import LengthDiff, PromptLengths

TOLERANCE = 0.01  # "within ±1%" of the intended count
WORST_SHOWN = 5


def prompt_lengths(records: Records) -> PromptLengths:
    """Sources of the lengths, how many were capped by the context, and for requests with
    both counts: the share within ±1% and the worst differences."""
    sources = {
        name: int((records.length_source.codes == code).sum())
        for code, name in enumerate(records.length_source.names)
    }
    intended, served = records.intended_prompt_tokens, records.served_prompt_tokens
    both = (intended > 0) & (served >= 0)
    diff = (served - intended)[both]
    rel = diff / intended[both]
    within = np.abs(rel) <= TOLERANCE
    order = np.argsort(-np.abs(rel), kind="stable")[:WORST_SHOWN]
    worst = [
        LengthDiff(intended=int(intended[both][i]), served=int(served[both][i]),
                   difference=int(diff[i]), relative=float(rel[i]))
        for i in order if diff[i] != 0
    ]  # fmt: skip
    return PromptLengths(
        sources=sources,
        approximate=int(sources.get("estimate", 0)),
        capped=int(records.length_capped.sum()),
        compared=int(both.sum()),
        within_tolerance=int(within.sum()),
        share_within=float(within.mean()) if within.size else None,
        tolerance=TOLERANCE,
        mean_relative=float(rel.mean()) if rel.size else None,
        worst=worst,
    )
