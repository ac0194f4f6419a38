"""``aichaos sim calibrate``: measure a real engine, fit the simulator to it, write a profile.

The engine is driven through the project's own load runner (closed-loop Locust users, the
same records and TTFT/TPOT definitions as a game day) over two designed sweeps (see
``step_fit``): a prompt-length sweep with one request at a time, and a concurrency sweep at
fixed prompt length with output lengths spread so the users fall out of step, as in steady
traffic. The KV pool comes from the engine itself (vLLM's ``vllm:cache_config_info``); the
scheduler limits vLLM does not publish (``max_num_seqs``, ``max_num_batched_tokens``) are
given by the caller, vLLM's CPU defaults otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from aichaos.errors import NotCompleted
from aichaos.fixtures.llm_sim.profiles import (
    ExtraTtft,
    Profile,
    Provider,
    StepEngineConfig,
    StepTime,
)
from aichaos.rundir import read_requests
from aichaos.scenarios.calibrate import run_once
from aichaos.scenarios.sizing import probe_target
from aichaos.scenarios.spec import Scenario

from .step_fit import COEFFICIENTS, Observation, StepFit, fit_step_time

CACHE_INFO = "vllm:cache_config_info"
# vLLM's defaults for its OpenAI server on a CPU (engine/arg_utils.py)
CPU_MAX_NUM_SEQS = 128
CPU_MAX_NUM_BATCHED_TOKENS = 2048


# A stream whose tokens all reached the client within the last 5% of its time was held back
# and delivered in one burst, which says nothing of the engine's steps: vLLM's CPU build on a
# 2-core machine does this to runs of requests (its API server records a TTFT of ~7 ms in
# vllm:time_to_first_token_seconds while the client gets every chunk at once ~150 ms later,
# on fresh connections too). Such streams are counted and left out of the medians.
BURST_SHARE = 0.05
BURST_MIN_TOKENS = 8
ATTEMPTS = 3  # tries of a load point whose every stream came in one burst


class CalibrationError(NotCompleted):
    """The engine could not be measured (unreachable, or every request failed): exit 3."""


class EngineFacts(BaseModel):
    """What the engine says about itself before it is measured."""

    url: str
    model: str
    max_model_len: int
    num_gpu_blocks: int | None = None  # None: the server does not publish its KV pool
    block_size: int | None = None


class Design(BaseModel):
    """The load points of one calibration."""

    prompt_lengths: list[int] = Field(min_length=2)  # one request at a time
    sweep_output_tokens: int = Field(64, ge=2)
    concurrency: list[int] = Field(min_length=2)  # at fixed prompt length
    prompt_tokens: int = Field(128, ge=1)
    output_tokens: int = Field(128, ge=4)  # mean; each request draws from [O/2, 3O/2]
    point_s: float = Field(gt=0)


FULL = Design(prompt_lengths=[32, 256, 512, 1024, 1536], concurrency=[1, 2, 4, 8, 16, 32],
              point_s=15.0)  # fmt: skip
QUICK = Design(prompt_lengths=[32, 512, 1024], concurrency=[1, 4, 12], output_tokens=64,
               point_s=6.0)  # fmt: skip


class Point(BaseModel):
    """One load point as measured: medians over its settled requests."""

    kind: str  # "length" | "concurrency" (or a benchmark's own)
    concurrency: int  # users of a closed loop; 0 for an open-loop load
    prompt_tokens: float
    output_tokens: float
    requests: int  # the requests the medians are over
    errors: int
    bursts: int = 0  # streams delivered in one burst: left out, unless every stream was
    ttft_p50_s: float
    tpot_p50_s: float
    itl_p50_s: float  # gaps between chunks, pooled over requests
    # the engine's own means over the point (its histograms), where it publishes them
    engine_ttft_s: float | None = None
    engine_tpot_s: float | None = None

    @property
    def all_bursts(self) -> bool:
        return self.bursts >= self.requests

    @property
    def engine_measured(self) -> bool:
        """Every stream came in one burst, so the engine's own means stand for it."""
        return self.all_bursts and bool(self.engine_ttft_s) and bool(self.engine_tpot_s)


class Calibration(BaseModel):
    engine: EngineFacts
    design: Design
    max_num_seqs: int
    max_num_batched_tokens: int
    points: list[Point]
    fit: StepFit
    notes: list[str] = []


def engine_facts(url: str, model: str | None = None) -> EngineFacts:
    """Model, context length and KV pool from ``/v1/models``, ``/tokenize`` and ``/metrics``."""
    probe = Scenario.from_dict(_scenario_dict("probe", 1, 16, 4, 1.0, model))
    info = probe_target(url, probe)
    if info.model is None or info.max_model_len is None:
        raise CalibrationError(f"{url}: no model and context length from /v1/models or "
                               f"/tokenize ({'; '.join(info.notes) or 'no answer'})")  # fmt: skip
    facts = EngineFacts(url=url, model=info.model, max_model_len=info.max_model_len)
    try:
        text = httpx.get(f"{url}/metrics", timeout=10.0).text
        for family in text_string_to_metric_families(text):
            if family.name == CACHE_INFO and family.samples:
                labels = family.samples[0].labels
                facts.num_gpu_blocks = int(labels["num_gpu_blocks"])
                facts.block_size = int(labels["block_size"])
    except (httpx.HTTPError, ValueError, KeyError):
        pass  # no published pool: the caller says so in the profile
    return facts


def _scenario_dict(name: str, concurrency: int, prompt: int, output: int | dict,
                   duration: float, model: str | None, seed: int = 1) -> dict:  # fmt: skip
    return {
        "name": name,
        "duration": duration,
        "seed": seed,
        "target": {"model": model} if model else {},
        "arrival": {"mode": "closed", "concurrency": concurrency},
        "tiers": [{"name": "calibrate", "share": 1.0, "headers": {}}],
        "workload": {"prompt_tokens": prompt, "output_tokens": output},
    }


def measure_point(facts: EngineFacts, kind: str, concurrency: int, prompt: int,
                  output: int | dict, duration: float, run_dir: Path,
                  seed: int) -> Point:  # fmt: skip
    """Run one closed-loop load point and take its medians, leaving out the first
    ``concurrency`` requests (they all start together, before the users fall out of step)."""
    spec = _scenario_dict(run_dir.name, concurrency, prompt, output, duration, facts.model, seed)
    return measure_load(facts.url, spec, run_dir, kind, skip=concurrency)


def measure_load(url: str, spec: dict, run_dir: Path, kind: str, skip: int = 0) -> Point:
    """Run the scenario ``spec`` against ``url`` with the load runner and take the medians of
    its records after the first ``skip`` requests sent, leaving out streams delivered in one
    burst (see ``BURST_SHARE``)."""
    scenario = Scenario.from_dict(spec)
    before = engine_means(url)
    run_once(scenario, url, run_dir)
    after = engine_means(url)
    df = read_requests(run_dir)[0].to_pandas().sort_values("t_sent")
    settled = df.iloc[skip:] if len(df) > 2 * skip else df
    ok = settled[settled.status == "ok"]
    if ok.empty:
        kinds = settled.error_kind.fillna("none").value_counts().head(3)
        seen = ", ".join(f"{k} x{v}" for k, v in kinds.items()) or "no records"
        where = f"{run_dir.parent.name}/{run_dir.name}"
        raise CalibrationError(f"{url}: no request of the {where} load succeeded "
                               f"({seen}; see {run_dir / 'load'})")  # fmt: skip
    burst = (ok.output_tokens >= BURST_MIN_TOKENS) & (ok.e2e_s - ok.ttft_s < BURST_SHARE * ok.e2e_s)
    if not burst.all():
        ok = ok[~burst]
    served = ok.served_prompt_tokens.fillna(ok.intended_prompt_tokens)
    gaps = [g for row in ok.itl_s if row is not None for g in row]
    return Point(
        kind=kind,
        concurrency=scenario.concurrency if scenario.mode == "closed" else 0,
        prompt_tokens=float(np.median(served)),
        output_tokens=float(ok.output_tokens.mean()),
        requests=len(ok),
        errors=int((settled.status != "ok").sum()),
        bursts=int(burst.sum()),
        ttft_p50_s=float(ok.ttft_s.median()),
        tpot_p50_s=float(ok.tpot_s.dropna().median()),
        itl_p50_s=float(np.median(gaps)) if gaps else float("nan"),
        engine_ttft_s=_delta_mean(before, after, ENGINE_TTFT),
        engine_tpot_s=_delta_mean(before, after, ENGINE_TPOT),
    )


ENGINE_TTFT = "vllm:time_to_first_token_seconds"
ENGINE_TPOT = "vllm:request_time_per_output_token_seconds"


def engine_means(url: str) -> dict[str, tuple[float, float]]:
    """``{histogram: (sum, count)}`` of the engine's own TTFT and TPOT histograms (vLLM's, as
    the simulator publishes them too); empty when the server has none."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10.0).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return {}
    out: dict[str, tuple[float, float]] = {}
    for family in families:
        if family.name not in (ENGINE_TTFT, ENGINE_TPOT):
            continue
        total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
        count = sum(s.value for s in family.samples if s.name.endswith("_count"))
        out[family.name] = (total, count)
    return out


def _delta_mean(before: dict, after: dict, name: str) -> float | None:
    """The mean of what the histogram ``name`` observed between the two scrapes."""
    if name not in before or name not in after:
        return None
    total = after[name][0] - before[name][0]
    count = after[name][1] - before[name][1]
    return total / count if count > 0 and total > 0 else None


def observations(points: list[Point]) -> list[Observation]:
    """The fit's observations. The time per output token is the engine's own where it
    publishes it: the step model is the engine's cadence, and an API server that bunches
    chunks makes the client's TPOT of a stream that was not flagged as a burst near zero,
    which a fit on relative errors answers by zeroing every decode coefficient (a CI run
    fitted c0 = c_decode = c_kv = 0). The TTFT is the client's median (it holds the API
    server's own work), or the engine's mean when every stream came in one burst; a point
    all in bursts from a server without those histograms has no observation."""
    out = []
    for p in points:
        if p.all_bursts and not p.engine_measured:
            continue
        shape = {"concurrency": p.concurrency, "prompt_tokens": p.prompt_tokens,
                 "output_tokens": p.output_tokens}  # fmt: skip
        ttft = p.engine_ttft_s if p.engine_measured else p.ttft_p50_s
        tpot = p.engine_tpot_s or p.tpot_p50_s
        if p.kind == "length":
            out.append(Observation(metric="ttft", seconds=ttft, **shape))
        out.append(Observation(metric="tpot", seconds=tpot, **shape))
    return out


def fit_design(design: Design, facts: EngineFacts, max_num_seqs: int) -> tuple[Design, list[str]]:
    """The design within what the engine can hold: lengths under its context, concurrency
    under ``max_num_seqs`` and a KV pool that never preempts (preemption is not step time)."""
    notes = []
    longest = facts.max_model_len - design.sweep_output_tokens - 8  # chat template tokens
    lengths = sorted({min(p, longest) for p in design.prompt_lengths})
    if lengths != sorted(design.prompt_lengths):
        notes.append(f"prompt lengths capped at {longest} by max_model_len {facts.max_model_len}")
    limit = max_num_seqs
    if facts.num_gpu_blocks and facts.block_size:
        per_seq = -(-(design.prompt_tokens + 2 * design.output_tokens) // facts.block_size)
        limit = min(limit, max(1, (facts.num_gpu_blocks - 1) // per_seq))
    levels = sorted({min(n, limit) for n in design.concurrency})
    if levels != sorted(design.concurrency):
        notes.append(f"concurrency capped at {limit} (max_num_seqs and KV pool)")
    if len(lengths) < 2 or len(levels) < 2:
        raise CalibrationError(f"{facts.url}: the engine is too small to calibrate "
                               f"(lengths {lengths}, concurrency {levels})")  # fmt: skip
    return design.model_copy(update={"prompt_lengths": lengths, "concurrency": levels}), notes


def calibrate(facts: EngineFacts, design: Design, work_dir: Path, max_num_seqs: int,
              max_num_batched_tokens: int,
              on_point: Callable[[Point], None] | None = None) -> Calibration:  # fmt: skip
    design, notes = fit_design(design, facts, max_num_seqs)
    # a short load first: an engine's first requests pay one-off costs (warm-up, caches)
    measure_point(facts, "warmup", 2, design.prompt_tokens, 16, 3.0, work_dir / "warmup", 0)
    points = []
    o = design.output_tokens
    spread = {"dist": "uniform", "low": o // 2, "high": o + o // 2}
    plan = [("length", 1, p, design.sweep_output_tokens) for p in design.prompt_lengths]
    plan += [("concurrency", n, design.prompt_tokens, spread) for n in design.concurrency]
    for seed, (kind, n, prompt, output) in enumerate(plan, start=1):
        # a point all in bursts says nothing, and one whose every request failed (a busy
        # machine, a passing engine stall) may go through on another try
        for attempt in range(1, ATTEMPTS + 1):
            run_dir = work_dir / f"{kind}-c{n}-p{prompt}" / f"attempt-{attempt}"
            try:
                point = measure_point(facts, kind, n, prompt, output, design.point_s, run_dir,
                                      seed)  # fmt: skip
            except CalibrationError:
                if attempt == ATTEMPTS:
                    raise
                continue
            if not point.all_bursts or point.engine_measured:
                break
        points.append(point)
        if on_point is not None:
            on_point(point)
    found = observations(points)
    if len(found) < len(COEFFICIENTS) or not any(o.metric == "ttft" for o in found):
        bursts = sum(p.all_bursts for p in points)
        raise CalibrationError(f"{facts.url}: {bursts} of {len(points)} load points had every "
                               f"stream delivered in one burst ({ATTEMPTS} tries each), too "
                               "few left to fit: the engine's API server held its tokens back "
                               "(a CPU-starved machine?)")  # fmt: skip
    fit = fit_step_time(found)
    return Calibration(engine=facts, design=design, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens, points=points, fit=fit,
                       notes=notes)  # fmt: skip


def to_profile(cal: Calibration, name: str) -> Profile:
    f, e = cal.fit, cal.engine
    pool = e.num_gpu_blocks or 1_000_000
    block = e.block_size or 16
    where = "the engine publishes no KV pool: modelled as unbounded"
    if e.num_gpu_blocks:
        where = f"KV pool {e.num_gpu_blocks} blocks of {e.block_size} tokens from {CACHE_INFO}"
    source = (
        f"aichaos sim calibrate against {e.url} ({e.model}) on {time.strftime('%Y-%m-%d')}: "
        f"{len(cal.points)} load points (prompt lengths {cal.design.prompt_lengths} one at a "
        f"time; concurrency {cal.design.concurrency} at {cal.design.prompt_tokens} prompt "
        f"tokens); {sum(p.bursts for p in cal.points)} streams delivered in one burst left "
        f"out, {sum(p.engine_measured for p in cal.points)} points taken from the engine's own "
        f"TTFT and TPOT histograms as all their streams were (the TPOT of every point is the "
        f"engine's own where it publishes it); fit median error "
        f"{f.median_error:.1%}, worst {f.max_error:.1%}; {where}; "
        f"max_num_seqs {cal.max_num_seqs} and max_num_batched_tokens "
        f"{cal.max_num_batched_tokens} as given. provider.extra_ttft is the API server's own "
        f"time before the engine sees a request."
    )
    return Profile(
        name=name,
        description=f"{e.model} as measured by aichaos sim calibrate",
        source=source,
        model=e.model,
        max_model_len=e.max_model_len,
        engine=StepEngineConfig(
            kind="step",
            max_num_batched_tokens=cal.max_num_batched_tokens,
            max_num_seqs=cal.max_num_seqs,
            block_size=block,
            num_gpu_blocks=pool,
            step_time=StepTime(c0=f.c0, c_prefill=f.c_prefill, c_decode=f.c_decode, c_kv=f.c_kv),
        ),
        provider=Provider(extra_ttft=ExtraTtft(median_s=f.extra) if f.extra > 0 else None),
    )


def write_profile(profile: Profile, path: Path, cal: Calibration) -> None:
    """The profile, loadable by ``aichaos sim serve --profile PATH``, with the measured points
    as a comment so a reader sees what it was fitted to."""
    body = yaml.safe_dump(profile.model_dump(exclude_none=True), sort_keys=False, width=100)
    lines = ["# measured load points (medians): kind, concurrency, prompt, output, TTFT, TPOT"]
    for p in cal.points:
        lines.append(f"#   {p.kind:11} c={p.concurrency:<3} P={p.prompt_tokens:<6.0f} "
                     f"O={p.output_tokens:<6.1f} ttft={p.ttft_p50_s * 1e3:.2f}ms "
                     f"tpot={p.tpot_p50_s * 1e3:.2f}ms")  # fmt: skip
    path.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
