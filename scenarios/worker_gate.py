"""Who may join a distributed load run: only workers that prove they hold the run's token.

Locust's master accepts any process that connects and says ``client_ready``. Our master
therefore never lets Locust hand out users, and gives a worker its share (scenario, headers,
API keys, target) only after a challenge-response over Locust's custom messages:

    worker -> master   aichaos_hello
    master -> worker   aichaos_challenge {nonce}            (a fresh random nonce per client)
    worker -> master   aichaos_proof {mac}                   (HMAC-SHA256(token, nonce))
    master -> worker   aichaos_refused {why} + Locust quit   (when the proof is wrong)

The token itself never crosses the wire, and a proof seen once is useless for another client.
A client that sends no valid proof within ``PROOF_TIMEOUT_S`` of connecting is refused too.
This module holds the bookkeeping, not the messaging, so it has no Locust (gevent) import.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

from aichaos.load_health import Refusal
from aichaos.rundir import InputError

TOKEN_ENV = "AICHAOS_LOAD_TOKEN"  # so a token never shows in ``ps``
MIN_TOKEN_CHARS = 16
PROOF_TIMEOUT_S = 10.0


def new_token() -> str:
    return secrets.token_urlsafe(32)


def resolve_token(given: str | None = None) -> str:
    """The run's token: the one given, else ``$AICHAOS_LOAD_TOKEN`` (so workers started
    beforehand can share it), else a fresh random one. A short one is bad input."""
    token = given or os.environ.get(TOKEN_ENV) or new_token()
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(TOKEN_ENV, "token", f"at least {MIN_TOKEN_CHARS} characters",
                         f"{len(token)} characters")  # fmt: skip
    return token


def proof(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), nonce.encode(), hashlib.sha256).hexdigest()


class WorkerGate:
    """The master's view of each connected client: challenged, trusted or refused.
    Without a token (a loopback master started by hand) every client is trusted."""

    def __init__(self, token: str | None):
        self.token = token or None
        self.nonces: dict[str, str] = {}
        self.connected_at: dict[str, float] = {}
        self.trusted: set[str] = set()
        self.refused: dict[str, Refusal] = {}
        self.dropped_rows = 0

    def connected(self, client_id: str) -> None:
        self.connected_at.setdefault(client_id, time.monotonic())
        if self.token is None:
            self.trusted.add(client_id)

    def challenge(self, client_id: str) -> str:
        self.connected(client_id)
        nonce = self.nonces[client_id] = secrets.token_hex(16)
        return nonce

    def verify(self, client_id: str, mac: object) -> bool:
        """True when ``mac`` proves the token for this client's nonce (constant time)."""
        if self.token is None or client_id in self.trusted:
            return client_id in self.trusted
        nonce = self.nonces.pop(client_id, None)
        if nonce is None or not isinstance(mac, str):
            return False
        if hmac.compare_digest(mac.encode(), proof(self.token, nonce).encode()):
            self.trusted.add(client_id)
            return True
        return False

    def is_trusted(self, client_id: str) -> bool:
        return client_id in self.trusted

    def refuse(self, client_id: str, why: str) -> Refusal | None:
        """Record a refusal; None when this client was refused already (counted once)."""
        if client_id in self.refused or client_id in self.trusted:
            return None
        refusal = Refusal(t=time.time(), client=client_id[:80], why=why)
        self.refused[client_id] = refusal
        return refusal

    def overdue(self) -> list[str]:
        """Clients connected longer than ``PROOF_TIMEOUT_S`` without a valid proof."""
        now = time.monotonic()
        return [
            c
            for c, at in self.connected_at.items()
            if c not in self.trusted and c not in self.refused and now - at > PROOF_TIMEOUT_S
        ]
