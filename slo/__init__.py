"""aichaos.slo: SLO specs, SLIs from a run's records and from Prometheus, phases, error budgets,
burn-rate alerts, verdicts and regression against baselines.

The API ``aichaos run`` and the CLI use:

- ``spec.load_spec(ref) -> SloSpec`` (built-in ``default`` / ``tiered`` / ``quick``, a YAML
  file, or OpenSLO v1 documents); ``SloSpec.from_dict(d)``, ``.to_dict()``, ``.name``;
- ``evaluate.evaluate_run(run_dir, spec, *, prometheus_url=None) -> SloResult``
  (``result.py``: slo.json as one typed model, ``SLO_SCHEMA_VERSION``),
  ``evaluate.write_result(run_dir, result)``, ``evaluate.exit_code(result)``;
  ``result.read_result(run_dir) -> SloResult | None`` (the one reader of slo.json);
- ``compare.compare_runs(base_dir, new_dir, spec=None) -> Comparison``;
  ``compare.with_baseline(result, baseline_dir, spec)`` (the caller compares: the evaluator
  does not import the comparison);
- ``baseline.promote(run_dir, baseline_dir, keep=10)``, ``baseline.latest(baseline_dir)``.

``series.py`` (per-second chart series) belongs to the reports side.
"""
