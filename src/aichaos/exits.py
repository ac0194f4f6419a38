"""The exit codes of every aichaos command (DESIGN "Exit codes"), one table for all of them,
so that the same outcome never gets two numbers nor the same number two meanings. A script or
CI job gating on ``aichaos`` relies on these; the Locust processes use them too, since
``aichaos load`` passes their codes on."""

from __future__ import annotations

OK = 0
# an SLO failed or regressed against a baseline; for ``aichaos chaos``, the steady-state
# hypothesis deviated
SLO_FAILED = 1
# bad input or usage (``rundir.InputError``), an experiment the blast-radius policy refuses,
# a worker whose token the master refused
BAD_INPUT = 2
# the run could not complete: stack or target down, load generator died, owner died,
# interrupted by Ctrl-C / SIGTERM (``aichaos run``, ``chaos`` and ``load``; ``slo check`` of
# such a run)
NOT_COMPLETED = 3
# the run completed but a key SLO objective was neither shown to hold nor to fail: its
# confidence interval straddles the threshold (more traffic would decide it)
INCONCLUSIVE = 4
