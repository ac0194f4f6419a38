"""A Toxiproxy-compatible fault proxy: Toxiproxy 2.x's HTTP API and toxics, in asyncio.

``aichaos toxiproxy serve`` runs it; ``toxiproxy-python``, ``chaostoolkit-toxiproxy`` and
``toxiproxy-cli`` drive it as they drive the Go server.
"""

from .api import API_VERSION
from .server import ToxiproxyServer

__all__ = ["API_VERSION", "ToxiproxyServer"]
