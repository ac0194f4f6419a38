"""aichaos: prove an LLM/RAG serving stack keeps its SLOs under load and under faults."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aichaos")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
