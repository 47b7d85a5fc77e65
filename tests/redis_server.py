"""A real ``redis-server`` for tests that claim fleet behaviour.

``redis_url`` starts one server per test session on a free loopback port, in a temporary
directory, with persistence off, and stops it afterwards. Use it with::

    from tests.redis_server import redis_url  # noqa: F401

The binary is the one named by the ``REDIS_SERVER`` environment variable, else
``redis-server`` on ``PATH``, else the one shipped inside the PyPI package ``redis-server``.
When none exists the tests fail, naming how to install one: a fleet claim must not pass by
skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

__all__ = ["find_redis_server", "redis_url"]

_INSTALL = (
    "redis-server was not found. Install it with `apt-get install -y redis-server` "
    "(Debian/Ubuntu) or `brew install redis`, or point REDIS_SERVER at a redis-server binary."
)


def find_redis_server() -> str | None:
    """The path of a usable ``redis-server`` binary, or ``None``."""
    env = os.environ.get("REDIS_SERVER")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_server  # type: ignore[import-not-found]  # PyPI package shipping a binary
    except ImportError:
        return None
    path = getattr(redis_server, "REDIS_SERVER_PATH", None)
    return str(path) if path and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh server that lives for the test session."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail(_INSTALL, pytrace=False)
    with tempfile.TemporaryDirectory(prefix="rllm-redis-") as workdir:
        for _ in range(3):  # another process may grab the port between probe and bind
            port = _free_port()
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
                 "--protected-mode", "yes", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None and not _ping(port):
                time.sleep(0.02)
            if proc.poll() is None and _ping(port):
                break
            proc.kill()
            proc.wait(timeout=5)
        else:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"redis-server did not start: {err[-500:]}", pytrace=False)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stderr:
                proc.stderr.close()
