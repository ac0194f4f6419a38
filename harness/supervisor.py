"""The local process supervisor: runs a topology's services as real processes on loopback.

It starts services in dependency order and waits for each to answer its readiness path,
creates the declared proxies as soon as the proxy server is ready, restarts a service that
exits after its ``restart_delay`` (as a Deployment restarts a pod), and stops everything on
the way out. Each process leads its own process group, so a service's children go with it.

The record of a stack is its run directory: ``logs/NAME.log`` per service,
``events.jsonl`` (every start, ready, exit, kill and restart, in DESIGN's event shape) and
``stack.json``, the state another shell reads to find and stop the stack (``StackClient``).

The Python API over it is ``aichaos.harness.stack`` (``Stack``, ``StackClient``).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aichaos.errors import NotCompleted
from aichaos.experiments.proxies import ProxyDecl, ToxiproxyClient, ToxiproxyError
from aichaos.loopback import free_port as loopback_port
from aichaos.processes import ProcessRef, process_start_time, signal_group
from aichaos.rundir import EventKind, EventLog
from aichaos.signalling import kill_service
from aichaos.stackfile import ExitRecord, PrometheusState, ProxyState, ServiceState, StackState

from . import owner_watch
from . import prometheus as prom
from .stack_state import (
    STACK_MARKER,
    STATE_FILE,
    clear_pointer,
    write_json,
    write_pointer,
)
from .topology import (
    PROXY_KIND,
    Instance,
    ServiceSpec,
    Topology,
    substitute,
)

EVENTS_FILE = "events.jsonl"
TICK = 0.1  # seconds between two looks at the processes
PROBE_TIMEOUT = 1.0
STOP_TIMEOUT = 5.0  # SIGTERM, then SIGKILL after this long
LOG_TAIL_LINES = 12
MAX_BACKOFF = 30.0  # seconds, for a service that keeps exiting before it is ready
PROGRESS_EVERY_S = 10.0  # a start-up this slow (a real engine: a minute or more) says so

# instance states
PENDING, STARTING, READY, RESTARTING, STOPPED = (
    "pending",
    "starting",
    "ready",
    "restarting",
    "stopped",
)


class StopFlag(Protocol):
    """What start-up and supervision poll to know they should stop (``threading.Event`` or
    ``SignalFlag``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class StackError(NotCompleted):
    """A stack operation failed; ``str()`` is one line for the user."""


class StackStartError(StackError):
    """The stack could not start; names the service and carries the tail of its log."""

    def __init__(self, message: str, service: str | None = None, log_tail: str = ""):
        super().__init__(message)
        self.service = service
        self.log_tail = log_tail

    def report(self) -> str:
        """The error line, then the log tail indented under it."""
        if not self.log_tail:
            return str(self)
        tail = "\n".join(f"  | {line}" for line in self.log_tail.splitlines())
        return f"{self}\n{tail}"


class StackInterrupted(StackError):
    """Start-up was stopped by a signal (Ctrl-C, SIGTERM)."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def free_port(taken: set[int]) -> int:
    try:
        return loopback_port(taken)
    except OSError as exc:
        raise StackError(str(exc)) from None


def probe(port: int, path: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """GET http://127.0.0.1:PORT/PATH: (answered 200, what happened)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except ConnectionRefusedError:
        return False, "connection refused"
    except (OSError, http.client.HTTPException) as exc:
        return False, str(exc) or type(exc).__name__
    finally:
        conn.close()
    return status == 200, f"HTTP {status}"


@dataclass
class Managed:
    """One instance and its current process."""

    instance: Instance
    port: int
    log_path: Path
    admin_port: int | None = None  # its control API's loopback port, never proxied
    state: str = PENDING
    popen: subprocess.Popen[bytes] | None = None
    start_time: float | None = None
    launched: float = 0.0  # monotonic
    started_at: float | None = None  # epoch
    ready_at: float | None = None
    restart_at: float = 0.0  # monotonic
    restarts: int = 0
    crashes: int = 0  # exits in a row before getting ready: they back the restart off
    probe_note: str = ""
    last_exit: ExitRecord | None = None
    groups: list[int] = field(default_factory=list)  # every process group it has led

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def spec(self) -> ServiceSpec:
        return self.instance.service

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def url(self) -> str:
        return self.spec.url or f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str | None:
        return f"http://127.0.0.1:{self.admin_port}" if self.admin_port else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _exit_detail(pid: int | None, code: int) -> dict[str, Any]:
    detail: dict[str, Any] = {"pid": pid, "returncode": code}
    if code < 0:
        try:
            detail["signal"] = signal.Signals(-code).name
        except ValueError:
            detail["signal"] = str(-code)
    return detail


class Supervisor:
    """Owns the processes of one stack. ``start()`` brings it up (blocking), ``run()`` or
    ``start_monitor()`` keeps restarting what exits, ``shutdown()`` stops everything."""

    def __init__(
        self,
        topology: Topology,
        run_dir: Path,
        *,
        source: str = "topology",
        prometheus: str | bool = True,
        pointer: Path | None = None,
        python: str = sys.executable,
    ):
        self.topology = topology
        self.source = source
        self.run_dir = Path(run_dir).resolve()
        self.pointer = pointer
        self.python = python
        self.events = EventLog(self.run_dir / EVENTS_FILE, "supervisor")
        self.status = "starting"
        self.error: str | None = None
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.stopped_at: float | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._shut = False
        self.proxy_listen: dict[str, str] = {}  # proxy name -> the address it really listens on
        self.prometheus_info: PrometheusState | None = None
        self.watch: subprocess.Popen[bytes] | None = None  # the owner watch (owner_watch.py)

        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        fixed = {s.port for s in topology.services if s.port}
        taken = set(fixed)
        self.procs: dict[str, Managed] = {}
        for instance in topology.instances():
            log_path = self.run_dir / "logs" / f"{instance.name}.log"
            if instance.service.external:  # nothing runs here: no port of ours, no log
                port = instance.service.upstream_address[1]
                self.procs[instance.name] = Managed(instance, port, log_path)
                continue
            port = instance.service.port or free_port(taken)
            taken.add(port)
            admin_port = free_port(taken) if instance.service.has_admin_port else None
            taken.add(admin_port or port)
            self.procs[instance.name] = Managed(instance, port, log_path, admin_port)
        self._plan_prometheus(prometheus, taken)

    # --- set-up ----------------------------------------------------------------------------

    def _plan_prometheus(self, wanted: str | bool, taken: set[int]) -> None:
        spec = self.topology.prometheus
        if spec is None:
            return
        binary = None
        if wanted:
            binary = prom.find_binary(wanted if isinstance(wanted, str) else None)
        if binary is None or prom.SERVICE_NAME in self.procs:
            reason = (
                "disabled"
                if not wanted
                else f"a service is already named {prom.SERVICE_NAME!r}"
                if binary
                else "prometheus not on PATH"
            )
            self.prometheus_info = PrometheusState(skipped=reason)
            return
        targets: dict[str, list[tuple[str, int]]] = {}
        for target in spec.targets:
            for p in self.procs.values():
                if target in (p.name, p.spec.name):
                    targets.setdefault(p.spec.name, []).append((p.name, p.port))
        config = self.run_dir / "prometheus.yml"
        config.write_text(prom.scrape_config(spec, targets), encoding="utf-8")
        command = prom.command(binary, config, self.run_dir)
        service = ServiceSpec(
            name=prom.SERVICE_NAME,
            kind="prometheus",
            command=command,
            ready=prom.READY_PATH,
            restart_delay=1.0,
        )
        port = free_port(taken)
        taken.add(port)
        log_path = self.run_dir / "logs" / f"{prom.SERVICE_NAME}.log"
        instance = Instance(prom.SERVICE_NAME, service, 1)
        self.procs[prom.SERVICE_NAME] = Managed(instance, port, log_path)
        self.prometheus_info = PrometheusState(url=f"http://127.0.0.1:{port}", config=config)

    # --- start-up --------------------------------------------------------------------------

    def start(self, interrupt: StopFlag | None = None) -> None:
        """Start every service and wait until all are ready. On failure (or when ``interrupt``
        is set) everything started is stopped and ``StackStartError`` / ``StackInterrupted``
        raised."""
        self.events.emit(
            EventKind.STACK, self.topology.name, "start", {"run_dir": str(self.run_dir)}
        )
        if self.pointer is not None:
            write_pointer(self.pointer, self.run_dir, os.getpid())
        # before any service: whatever this process dies of, someone stops what it started
        self.watch = owner_watch.spawn(self.run_dir, ProcessRef.current())
        if self.prometheus_info and self.prometheus_info.skipped:
            reason = self.prometheus_info.skipped
            self.events.emit(
                EventKind.PROMETHEUS, prom.SERVICE_NAME, "instant", {"skipped": reason}
            )
            print(f"aichaos stack: prometheus not started: {reason}", file=sys.stderr)
        self._save()
        try:
            self._start_all(interrupt or threading.Event())
        except BaseException as exc:
            self.error = str(exc) if isinstance(exc, StackError) else repr(exc)
            if isinstance(exc, StackStartError):
                self.error = exc.report()
            self.shutdown(status="failed")
            raise
        with self._lock:
            self.status = "ready"
            self.ready_at = time.time()
            self._save()
        self.events.emit(
            EventKind.STACK, self.topology.name, "instant", {"status": "ready", "urls": self.urls()}
        )

    def _start_all(self, interrupt: StopFlag) -> None:
        began = time.monotonic()
        deadline = began + sum(p.spec.ready_timeout for p in self.procs.values()) + 30
        next_note = began + PROGRESS_EVERY_S
        while time.monotonic() < deadline:
            if time.monotonic() >= next_note:
                self._note_progress(began)
                next_note += PROGRESS_EVERY_S
            if interrupt.is_set():
                raise StackInterrupted("start-up interrupted")
            for p in self.procs.values():
                if p.state == PENDING and all(
                    self.procs[d].state == READY for d in p.instance.depends_on
                ):
                    self._launch(p, starting=True)
            for p in self.procs.values():
                if p.state == STARTING:
                    self._check_starting(p, starting=True)
            if all(p.state == READY for p in self.procs.values()):
                return
            interrupt.wait(TICK)
        raise StackStartError("start-up did not finish in time")

    def _note_progress(self, began: float) -> None:
        """One stderr line: who is still starting, for how long, and what its probe got."""
        waiting = [
            f"{p.name} ({p.probe_note or 'launching'})"
            for p in self.procs.values()
            if p.state == STARTING
        ]
        if waiting:
            elapsed = time.monotonic() - began
            line = f"aichaos stack: {elapsed:.0f}s, waiting for {', '.join(waiting)}"
            print(line, file=sys.stderr, flush=True)

    def _fail(self, p: Managed, why: str) -> StackStartError:
        message = f"service {p.name!r} {why}; its log {p.log_path} ends:"
        tail = log_tail(p.log_path)
        if not tail:
            message = f"service {p.name!r} {why}; its log {p.log_path} is empty"
        return StackStartError(message, p.name, tail)

    # --- one process -----------------------------------------------------------------------

    def _command(self, p: Managed) -> tuple[list[str], dict[str, str]]:
        values = {
            "python": self.python,
            "port": str(p.port),
            "admin_port": str(p.admin_port or ""),
            "run_dir": str(self.run_dir),
            "name": p.name,
            "replica": str(p.instance.replica),
        }
        refs = {
            "url": {name: q.url for name, q in self.procs.items()},
            "proxy": {name: f"http://{listen}" for name, listen in self.proxy_listen.items()},
        }
        try:
            command = [substitute(part, values, refs) for part in p.spec.command]
            env = {k: substitute(v, values, refs) for k, v in p.spec.env.items()}
        except KeyError as exc:  # a proxy not created yet: the dependency order prevents it
            raise StackStartError(f"service {p.name!r}: {exc.args[0]!r} is not known yet") from None
        marker = {STACK_MARKER: str(self.run_dir)}  # orphans.py stops only processes with it
        return command, {**os.environ, "PYTHONUNBUFFERED": "1", **env, **marker}

    def _launch(self, p: Managed, starting: bool = False) -> None:
        if p.spec.external:  # someone else runs it: it is there, as it is
            with self._lock:
                p.state, p.started_at, p.ready_at = READY, time.time(), time.time()
                self._save()
            self.events.emit(EventKind.EXTERNAL, p.name, "instant", {"url": p.url})
            return
        command, env = self._command(p)
        attempt = p.restarts + 1
        with open(p.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"--- aichaos supervisor: start #{attempt} at {stamp}: {command}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group, killed as one
                )
            except OSError as exc:
                if starting:
                    raise self._fail(p, f"could not start: {exc}") from None
                log.write(f"--- aichaos supervisor: could not start: {exc}\n".encode())
                with self._lock:
                    p.state = RESTARTING
                    p.restart_at = time.monotonic() + max(p.spec.restart_delay, 1.0)
                self.events.emit(EventKind.EXIT, p.name, "instant", {"error": str(exc)})
                return
        with self._lock:
            p.popen = popen
            p.groups.append(popen.pid)
            p.start_time = process_start_time(popen.pid)
            p.launched = time.monotonic()
            p.started_at = time.time()
            p.ready_at = None
            p.state = STARTING
            p.probe_note = ""
            self._save()
        detail = {"pid": popen.pid, "port": p.port, "attempt": attempt}
        self.events.emit(EventKind.START, p.name, "instant", detail)

    def _check_starting(self, p: Managed, starting: bool) -> None:
        code = p.popen.poll() if p.popen is not None else None
        if code is not None:
            if starting:
                raise self._fail(p, f"exited with code {code} before it was ready")
            self._on_exit(p, code)
            return
        ok, note = probe(p.port, p.spec.ready)
        if ok:
            self._on_ready(p, starting)
            return
        p.probe_note = note
        waited = time.monotonic() - p.launched
        if waited > p.spec.ready_timeout:
            why = f"not ready after {p.spec.ready_timeout:g}s (GET {p.url}{p.spec.ready}: {note})"
            if starting:
                raise self._fail(p, why)
            # a restarted service that never gets ready is replaced, as a liveness probe would
            self.events.emit(EventKind.NOT_READY, p.name, "instant", {"pid": p.pid, "reason": why})
            self._kill_group(p, signal.SIGKILL)

    def _on_ready(self, p: Managed, starting: bool) -> None:
        if p.spec.kind == PROXY_KIND and self.topology.proxies:
            try:
                self._populate(p)
            except ToxiproxyError as exc:
                if starting:
                    raise self._fail(p, f"could not create the proxies: {exc}") from None
                self.events.emit(EventKind.PROXIES, p.name, "instant", {"error": str(exc)})
        ready_at = time.time()
        after = round(ready_at - (p.started_at or ready_at), 3)
        # the event is written before the state says ready, so whoever sees READY finds the event
        self.events.emit(EventKind.READY, p.name, "instant", {"pid": p.pid, "after_s": after})
        with self._lock:
            p.state = READY
            p.crashes = 0
            p.ready_at = ready_at
            self._save()

    def _populate(self, p: Managed) -> None:
        decls = [
            ProxyDecl(
                proxy.name,
                self.proxy_listen.get(proxy.name, proxy.listen),
                *self._upstream(self.procs[proxy.upstream], proxy.enabled),
            )
            for proxy in self.topology.proxies
        ]
        created = ToxiproxyClient(p.url, timeout=5.0).populate(decls)
        missing = [d.name for d in decls if d.name not in created]
        if missing:
            raise ToxiproxyError(f"populate: the server did not return {', '.join(missing)}")
        with self._lock:
            # kept, so a restarted proxy server listens where the dependents already point
            self.proxy_listen = {name: proxy.listen for name, proxy in created.items()}
        self.events.emit(EventKind.PROXIES, p.name, "instant", {"listen": dict(self.proxy_listen)})

    @staticmethod
    def _upstream(p: Managed, enabled: bool) -> tuple[str, bool, bool]:
        """``(address, enabled, tls)`` of a proxy's upstream: an instance on loopback, or an
        endpoint given by url (TLS when https)."""
        if not p.spec.external:
            return f"127.0.0.1:{p.port}", enabled, False
        host, port, tls = p.spec.upstream_address
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return address, enabled, tls

    def _on_exit(self, p: Managed, code: int) -> None:
        detail = _exit_detail(p.pid, code)
        with self._lock:
            # a replica that was serving comes back after its restart delay, as a pod would;
            # one that keeps dying before it is ready backs off (CrashLoopBackOff)
            p.crashes = p.crashes + 1 if p.state == STARTING else 0
            delay = p.spec.restart_delay
            if p.crashes:
                delay = min(MAX_BACKOFF, max(delay, 0.5) * 2**p.crashes)
            p.last_exit = ExitRecord.model_validate({**detail, "t": time.time()})
            p.state = RESTARTING
            p.restart_at = time.monotonic() + delay
            self._save()
        detail["restart_in_s"] = delay
        self.events.emit(EventKind.EXIT, p.name, "instant", detail)
        if p.pid is not None:
            signal_group(p.pid, signal.SIGKILL)  # children it left behind would hold its port

    def _kill_group(self, p: Managed, sig: int) -> None:
        if p.pid is not None and p.running():
            signal_group(p.pid, sig)

    # --- steady state ----------------------------------------------------------------------

    def tick(self) -> None:
        """One look at every process: note exits, probe restarted ones, restart when due."""
        for p in list(self.procs.values()):
            if self._stop.is_set():
                return
            if p.state == READY and p.popen is not None:
                code = p.popen.poll()
                if code is not None:
                    self._on_exit(p, code)
            elif p.state == STARTING:
                self._check_starting(p, starting=False)
            elif p.state == RESTARTING and time.monotonic() >= p.restart_at:
                with self._lock:
                    p.restarts += 1
                detail = {"attempt": p.restarts + 1}
                self.events.emit(EventKind.RESTART, p.name, "instant", detail)
                self._launch(p)

    def run(self, stop: StopFlag | None = None) -> None:
        """Supervise until ``stop`` (or ``shutdown()``) is set."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            self.tick()
            stop.wait(TICK)

    def start_monitor(self) -> None:
        self._monitor = threading.Thread(target=self.run, name="aichaos-supervisor", daemon=True)
        self._monitor.start()

    # --- operations ------------------------------------------------------------------------

    def _get(self, name: str) -> Managed:
        p = self.procs.get(name)
        if p is None:
            raise StackError(f"no service {name!r} (services: {', '.join(self.procs)})")
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal one service's process group; the supervisor restarts it once it exits."""
        with self._lock:
            p = self._get(name)
            if not p.running() or p.pid is None:
                raise StackError(f"service {name!r} is not running (state {p.state})")
            pid, started = p.pid, p.start_time
        if not kill_service(self.events, name, pid, started, sig):
            raise StackError(f"service {name!r} exited before it could be killed")
        return pid

    def url(self, name: str) -> str:
        return self._get(name).url

    def admin_url(self, name: str) -> str:
        url = self._get(name).admin_url
        if url is None:
            why = "its command takes no {admin_port}"
            raise StackError(f"service {name!r} has no admin port ({why})")
        return url

    def proxy_url(self, name: str) -> str:
        listen = self.proxy_listen.get(name)
        if listen is None:
            raise StackError(f"no proxy {name!r} (proxies: {', '.join(self.proxy_listen)})")
        return f"http://{listen}"

    def urls(self) -> dict[str, str]:
        return {name: p.url for name, p in self.procs.items()}

    def state(self) -> StackState:
        with self._lock:
            services = {
                name: ServiceState(
                    service=p.spec.name,
                    kind=p.spec.kind,
                    external=p.spec.external,
                    replica=p.instance.replica,
                    state=p.state,
                    pid=p.pid,
                    start_time=p.start_time,
                    port=p.port,
                    url=p.url,
                    admin_port=p.admin_port,
                    admin_url=p.admin_url,
                    ready_url=f"{p.url}{p.spec.ready}",
                    log=p.log_path,
                    restarts=p.restarts,
                    started_at=p.started_at,
                    ready_at=p.ready_at,
                    last_exit=p.last_exit,
                )
                for name, p in self.procs.items()
            }
            proxies = {}
            for proxy in self.topology.proxies:
                listen = self.proxy_listen.get(proxy.name)
                proxies[proxy.name] = ProxyState(
                    listen=listen,
                    url=f"http://{listen}" if listen else None,
                    upstream=proxy.upstream,
                    upstream_url=self.procs[proxy.upstream].url,
                    enabled=proxy.enabled,
                )
            return StackState(
                name=self.topology.name,
                topology=self.source,
                run_dir=self.run_dir,
                events=self.events.path,
                status=self.status,
                error=self.error,
                started_at=self.started_at,
                ready_at=self.ready_at,
                stopped_at=self.stopped_at,
                supervisor=ProcessRef.current(),
                watchdog=self._watch_ref(),
                services=services,
                proxies=proxies,
                prometheus=self.prometheus_info,
            )

    def _watch_ref(self) -> ProcessRef | None:
        if self.watch is None or self.watch.poll() is not None:
            return None
        return ProcessRef.of(self.watch.pid)

    def _end_watch(self) -> None:
        """The stack is over: the owner watch has nothing left to guard (it also ends by itself
        once the state file says so; this reaps it)."""
        watch = self.watch
        if watch is None:
            return
        if watch.poll() is None:
            watch.terminate()
        try:
            watch.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait(STOP_TIMEOUT)

    def _save(self) -> None:
        write_json(self.run_dir / STATE_FILE, self.state().model_dump(mode="json"))

    # --- shut-down -------------------------------------------------------------------------

    def shutdown(self, status: str = "stopped") -> None:
        """Stop every process (SIGTERM to its group, SIGKILL after ``STOP_TIMEOUT``) and
        record the stack as stopped. Safe to call more than once and from any thread."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            self._stop.set()
            self.status = "stopping" if status == "stopped" else status
            self._save()
        monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(timeout=STOP_TIMEOUT + 5)
        running = [p for p in reversed(self.procs.values()) if p.running()]
        for p in running:
            self._kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in running:
            assert p.popen is not None
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(p.popen.pid, signal.SIGKILL)
                p.popen.wait(STOP_TIMEOUT)
        for p in self.procs.values():
            for pgid in p.groups:  # whatever a service left behind in its group
                signal_group(pgid, signal.SIGKILL)
        with self._lock:
            for p in running:
                assert p.popen is not None
                detail = _exit_detail(p.pid, p.popen.returncode)
                self.events.emit(EventKind.STOP, p.name, "instant", detail)
            for p in self.procs.values():
                p.state = STOPPED
            self.status = status
            self.stopped_at = time.time()
            self._save()
        self.events.emit(EventKind.STACK, self.topology.name, "end", {"status": status})
        self._end_watch()
        if self.pointer is not None:
            clear_pointer(self.pointer, self.run_dir)
