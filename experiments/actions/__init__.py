"""Chaos Toolkit actions (Python providers) for aichaos stacks; each has its rollback.

- ``aichaos.experiments.actions.replicas``  kill / terminate replicas, engine death, slow start
- ``aichaos.experiments.actions.network``   proxy outages and toxics on any proxy edge
- ``aichaos.experiments.actions.provider``  simulator fault modes: error storms, mid-stream
                                             errors, stalls, slow responses, KV-cache shrink
- ``aichaos.experiments.actions.load``      noisy neighbour: extra load for one tier
"""
