"""The real tollgate binary on a temp config, for the end-to-end tests.

``Tollgate.start(config_rest)`` writes ``server_section(...)`` + ``config_rest``
to a temp dir, starts the binary (``$TOLLGATE_BIN``, else
``$CARGO_TARGET_DIR/debug/tollgate``, else ``target/debug/tollgate``), waits
until both listeners answer and ``/readyz`` is 200, and ``stop()`` ends it
and fails if its log holds any secret the tests gave it (see ``SECRETS``).
The Python counterpart of ``tests/common/mod.rs``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def binary() -> Path:
    if os.environ.get("TOLLGATE_BIN"):
        path = Path(os.environ["TOLLGATE_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
        path = target / "debug" / "tollgate"
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no tollgate binary at {path}: run `cargo build` (or ./dev test)")
    return path


_FIRST_PORT = 10_000
_next_port = itertools.count()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bind_any_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port() -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range.

    A port from bind(0) is released before tollgate binds it, and the kernel
    may hand it to a mock server meanwhile; ports below the ephemeral range
    are never handed out by the kernel, so they are taken from a
    per-process sequence instead (same scheme as tests/common/mod.rs).
    """
    low = _ephemeral_low()
    if low <= _FIRST_PORT + 1_000:
        return _bind_any_port()
    span = low - _FIRST_PORT
    offset = os.getpid() * 7_919 % span
    for _ in range(span):
        port = _FIRST_PORT + (offset + next(_next_port)) % span
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return _bind_any_port()


# Every secret the tests gave tollgate: client keys (through ``sha256_hex``),
# the channel keys and admin tokens of its configs, and the environment
# values (but RUST_LOG) it was started with. ``stop()`` checks the whole log
# against all of them, so every test's log is grepped for secrets. Secrets
# under 6 characters are left out: they turn up in logs by chance.
SECRETS: set[str] = set()
_SECRET_FIELD = re.compile(
    r'^\s*(?:api_key|key|admin_token|aws_secret_access_key|aws_session_token)\s*=\s*"([^"]*)"',
    re.MULTILINE,
)


def remember_secret(secret: str) -> None:
    if len(secret) >= 6 and "${" not in secret:
        SECRETS.add(secret)


def sha256_hex(secret: str) -> str:
    """Hex sha256 of a secret, for ``key_sha256`` lines; remembers the secret."""
    remember_secret(secret)
    return hashlib.sha256(secret.encode()).hexdigest()


def server_section(port: int, admin_port: int, data_dir: Path) -> str:
    """The ``[server]`` head of a test config: loopback, short timeouts."""
    return f"""[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
data_dir = "{data_dir}"
upstream_connect_timeout_ms = 1000
upstream_header_timeout_seconds = 10
upstream_idle_timeout_seconds = 10
shutdown_grace_seconds = 0
# One thread: these tests run on the single-threaded runtime, the Rust
# integration tests (two threads) on the work-stealing one.
threads = 1
"""


class Tollgate:
    def __init__(self, config_rest: str, env: dict[str, str] | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="tollgate-e2e-")
        self.dir = Path(self._dir.name)
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = self.dir / "tollgate.toml"
        self.log_path = self.dir / "tollgate.log"
        head = server_section(self.port, self.admin_port, self.dir / "data")
        self.config_path.write_text(head + "\n" + config_rest)
        for secret in _SECRET_FIELD.findall(config_rest):
            remember_secret(secret)
        for name, value in (env or {}).items():
            if name != "RUST_LOG":
                remember_secret(value)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(binary()), "run", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "RUST_LOG": "info", **(env or {})},
        )

    @classmethod
    def start(cls, config_rest: str, env: dict[str, str] | None = None) -> "Tollgate":
        t = cls(config_rest, env)
        try:
            t.wait_ready()
        except BaseException:
            t.stop()
            raise
        return t

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tollgate exited with {self.process.returncode}; log:\n{self.log()}"
                )
            if self._listening(self.port) and self._ready():
                return
            time.sleep(0.02)
        raise RuntimeError(f"tollgate did not become ready; log:\n{self.log()}")

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.admin_url("/readyz"), timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        log = self.log()
        self._dir.cleanup()
        leaked = sorted(s for s in SECRETS if s in log)
        assert not leaked, f"tollgate's log holds the secrets {leaked}:\n{log}"
