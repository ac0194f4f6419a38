"""Chaos Toolkit probes that read the live run (request records) and the stack (state file,
gateway metrics): ``aichaos.experiments.probes.run`` and ``aichaos.experiments.probes.stack``."""
