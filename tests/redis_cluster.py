"""Real Redis Clusters for tests that claim cluster behaviour: 3 masters + 3 replicas.

``redis_cluster`` starts one plain cluster per test session; ``redis_tls_cluster`` one over
TLS (a CA made for the session with the ``openssl`` command) whose only user is an ACL user
(the ``default`` user is off). Both use ``redis-server`` in cluster mode on loopback ports
whose bus port (+10000) is free, with persistence off, and ``redis-cli --cluster create``.
Use them with::

    from tests.redis_cluster import redis_cluster, redis_tls_cluster  # noqa: F401

When a binary is missing the tests fail naming how to install it: a cluster claim must not
pass by skipping.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import find_redis_server

__all__ = ["Cluster", "redis_cluster", "redis_tls_cluster"]

_INSTALL = (
    "{what} was not found. Install it with `apt-get install -y redis-server redis-tools "
    "openssl` (Debian/Ubuntu) or `brew install redis openssl`."
)
ACL_USER, ACL_PASSWORD = "rllm-tester", "cluster-test-pw"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_ports(count: int) -> list[int]:
    """``count`` ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randrange(20_000, 30_000)
        if port not in ports and _port_free(port) and _port_free(port + 10_000):
            ports.append(port)
    return ports


@dataclass
class Cluster:
    """A running cluster: its nodes, a URL of one node, and ways to inspect and break it."""

    ports: list[int]
    tls: bool
    workdir: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    ca: Path | None = None

    def url(self, port: int | None = None, *, user: bool = True) -> str:
        """``redis://127.0.0.1:PORT/0`` (or ``rediss://USER:PW@...?ssl_ca_certs=CA``)."""
        port = port or self.ports[0]
        if not self.tls:
            return f"redis://127.0.0.1:{port}/0"
        creds = f"{ACL_USER}:{ACL_PASSWORD}@" if user else ""
        return f"rediss://{creds}127.0.0.1:{port}/0?ssl_ca_certs={self.ca}"

    def client(self) -> Any:
        """A redis-py cluster client for inspecting what the library wrote."""
        from redis.cluster import RedisCluster

        options: dict[str, Any] = {"decode_responses": True}
        if self.tls:
            options.update(username=ACL_USER, password=ACL_PASSWORD, ssl=True,
                           ssl_ca_certs=str(self.ca))
        return RedisCluster(host="127.0.0.1", port=self.ports[0], **options)

    def keys(self, pattern: str) -> list[str]:
        """Every key matching ``pattern`` on every master."""
        client = self.client()
        try:
            return sorted(client.keys(pattern, target_nodes=client.PRIMARIES))
        finally:
            client.close()

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            [*self._cli_base(), "-p", str(port), *args],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout

    def _cli_base(self) -> list[str]:
        base = [_binary("redis-cli")]
        if self.tls:
            base += ["--tls", "--cacert", str(self.ca), "--user", ACL_USER, "--pass",
                     ACL_PASSWORD, "--no-auth-warning"]
        return base

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        client = self.client()
        try:
            return int(client.get_node_from_key(key).port)
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """Kill one node at once (SIGKILL): no goodbye to the cluster."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=5)

    def wait_failover(self, killed: int, timeout: float = 30.0) -> None:
        """Until the cluster has marked ``killed`` failed and a replica serves its slots."""
        end = time.monotonic() + timeout
        live = next(iter(self.procs))
        while time.monotonic() < end:
            try:
                nodes = self.cli(live, "cluster", "nodes").splitlines()
                line = next((n for n in nodes if f":{killed}@" in n), "")
                flags = line.split()[2].split(",") if line else []
                if "fail" in flags:
                    self.wait_ok(timeout=max(0.1, end - time.monotonic()))
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the cluster did not fail over from {killed} in {timeout} s")

    def wait_replicas(self, timeout: float = 20.0) -> None:
        """Until every replica has synced with its master (else it could not take over)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            infos = [self.cli(p, "info", "replication") for p in self.procs]
            replicas = [i for i in infos if "role:slave" in i]
            if replicas and all("master_link_status:up" in i for i in replicas):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replicas did not sync in {timeout} s")

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every live node reports ``cluster_state:ok`` (after a failover, too)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.procs):
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the cluster did not reach cluster_state:ok in {timeout} s")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def _binary(name: str) -> str:
    found = find_redis_server() if name == "redis-server" else shutil.which(name)
    if found is None:
        pytest.fail(_INSTALL.format(what=name), pytrace=False)
    return found


def _make_certificates(workdir: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's path."""
    openssl = _binary("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=workdir, capture_output=True, check=True,
                       timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=resilient-llm test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return workdir / "ca.crt"


def _start(tls: bool) -> Cluster:
    server = _binary("redis-server")
    _binary("redis-cli")
    workdir = Path(tempfile.mkdtemp(prefix="rllm-cluster-"))
    cluster = Cluster(ports=_free_cluster_ports(6), tls=tls, workdir=workdir)
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
              "--cluster-enabled", "yes", "--cluster-node-timeout", "1500",
              "--repl-diskless-sync-delay", "0",  # replicas in sync at once: failover-ready
              "--daemonize", "no", "--loglevel", "warning"]
    if tls:
        cluster.ca = _make_certificates(workdir)
        common += ["--tls-cert-file", str(workdir / "server.crt"),
                   "--tls-key-file", str(workdir / "server.key"),
                   "--tls-ca-cert-file", str(cluster.ca), "--tls-auth-clients", "no",
                   "--tls-cluster", "yes", "--tls-replication", "yes",
                   "--user", "default", "off",
                   "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all",
                   "--masteruser", ACL_USER, "--masterauth", ACL_PASSWORD]
    try:
        for port in cluster.ports:
            node_dir = workdir / str(port)
            node_dir.mkdir()
            listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
            cluster.procs[port] = subprocess.Popen(
                [server, *listen, *common, "--dir", str(node_dir),
                 "--cluster-config-file", f"nodes-{port}.conf"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=node_dir,
            )
        end = time.monotonic() + 10
        while True:
            try:
                if all(cluster.cli(p, "ping").strip() == "PONG" for p in cluster.ports):
                    break
            except (subprocess.SubprocessError, OSError):
                pass
            if time.monotonic() > end:
                raise TimeoutError("the cluster's nodes did not start")
            time.sleep(0.05)
        subprocess.run(
            [*cluster._cli_base(), "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in cluster.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )
        cluster.wait_ok()
        cluster.wait_replicas()
    except BaseException:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return cluster


@contextlib.contextmanager
def _running(*, tls: bool) -> Iterator[Cluster]:
    """A started cluster, stopped and removed afterwards."""
    cluster = _start(tls=tls)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A plain 3 + 3 cluster for the session (tests that kill nodes use their own)."""
    with _running(tls=False) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_tls_cluster() -> Iterator[Cluster]:
    """A 3 + 3 cluster over TLS whose only user is an ACL user."""
    with _running(tls=True) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own, for tests that kill a node."""
    with _running(tls=False) as cluster:
        yield cluster
