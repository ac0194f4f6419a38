"""Fit the simulator's step-time model to what a real engine was measured doing.

The simulator's step lasts ``c0 + c_prefill*prefill_tokens + c_decode*decode_seqs +
c_kv*context_tokens`` and the first token of a request waits ``extra`` more before the
engine sees it (the API server's own work: HTTP, chat template, tokenization). Two designed
loads pin those five numbers down:

- **prompt-length sweep**, one request at a time: the TTFT is ``extra + c0 + c_prefill*P``
  and the time per output token ``c0 + c_decode + c_kv*(P + O/2)`` (the context grows from P
  to P+O while it decodes);
- **concurrency sweep** at fixed lengths, N requests always in flight: every decode step
  holds N sequences, and over one request's O steps the other N-1 each arrive once and
  prefill P tokens in a shared step, so the time per output token is
  ``c0 + c_decode*N + c_kv*N*(P + O/2) + c_prefill*P*(N-1)/O``.

Each observation is a median over a load point's requests; the equations are solved by
non-negative least squares on relative errors, so a 5 ms TTFT and a 200 ms one weigh the same.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import nnls

COEFFICIENTS = ("extra", "c0", "c_prefill", "c_decode", "c_kv")


class Observation(BaseModel):
    """One measured median of one load point."""

    model_config = ConfigDict(frozen=True)

    metric: Literal["ttft", "tpot"]
    concurrency: int = Field(ge=1)
    prompt_tokens: float = Field(ge=1)
    output_tokens: float = Field(ge=1)
    seconds: float = Field(gt=0)


class StepFit(BaseModel):
    """The fitted coefficients (seconds, per token or per sequence) and how well they fit."""

    extra: float
    c0: float
    c_prefill: float
    c_decode: float
    c_kv: float
    median_error: float  # median relative error of the model over the observations
    max_error: float


def features(obs: Observation) -> list[float]:
    """The row of the design matrix: ``predicted = features @ coefficients``."""
    n, p, o = obs.concurrency, obs.prompt_tokens, obs.output_tokens
    if obs.metric == "ttft":
        return [1.0, 1.0, p, 0.0, 0.0]
    return [0.0, 1.0, p * (n - 1) / o, float(n), n * (p + o / 2.0)]


def predict(fit: StepFit, obs: Observation) -> float:
    coef = np.array([getattr(fit, name) for name in COEFFICIENTS])
    return float(np.dot(features(obs), coef))


def fit_step_time(observations: list[Observation]) -> StepFit:
    """Coefficients (all ≥ 0) minimising the relative error over ``observations``."""
    if len(observations) < len(COEFFICIENTS):
        raise ValueError(
            f"{len(observations)} observations cannot fit {len(COEFFICIENTS)} coefficients"
        )
    y = np.array([o.seconds for o in observations])
    a = np.array([features(o) for o in observations]) / y[:, None]
    # columns differ by orders of magnitude (seconds vs seconds per token): scale them to
    # unit norm so the solver's tolerance treats each alike
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    solution, _ = nnls(a / norms, np.ones(len(y)))
    coef = solution / norms
    values = dict(zip(COEFFICIENTS, (float(c) for c in coef), strict=True))
    errors = np.abs(np.array([features(o) for o in observations]) @ coef / y - 1.0)
    return StepFit(**values, median_error=float(np.median(errors)), max_error=float(errors.max()))
