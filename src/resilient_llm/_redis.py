"""Opening Redis for the fleet and the ledgers: one server or any node of a cluster, TLS, ACLs.

Users give one URL per use (``RESILIENT_LLM_REDIS_URL``, ``RESILIENT_LLM_IDEMPOTENCY_STORE``).
The URL of any node of a Redis Cluster works: the first connection asks the node
(``INFO cluster``) and, when it belongs to a cluster, opens redis-py's cluster client, which
follows ``MOVED``/``ASK`` redirections and refreshes its slot map. ``?cluster=true`` or
``?cluster=false`` skips the question, and a URL that says the opposite of what the node is
fails with a :class:`ConfigError` naming both, on the first use rather than on every call.

``rediss://`` is TLS with certificate verification on (redis-py's default); the CA bundle and
a client certificate go in the URL's query (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``), so each Redis the process uses may have its own. ``user:password@`` logs in
as an ACL user. The password, and ``ssl_password``, never leave this module in clear: every
message uses :attr:`RedisURL.label`.

redis-py is imported on first connection, never at ``import resilient_llm``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import ConfigError
from ._urls import redact_url

__all__ = ["RedisURL", "describe_redis_failure", "open_redis", "parse_redis_url"]

#: Query parameters redis-py reads from a URL, plus the TLS and naming ones it passes on to its
#: connections, plus our own ``cluster``. Anything else is a typo that redis-py would only
#: report when it first connects, as a ``TypeError``.
_QUERY_NAMES = frozenset({
    "db", "socket_timeout", "socket_connect_timeout", "socket_read_size", "socket_keepalive",
    "retry_on_timeout", "max_connections", "health_check_interval", "timeout", "protocol",
    "client_name", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile",
    "ssl_keyfile", "ssl_password", "ssl_cert_reqs", "ssl_check_hostname", "ssl_min_version",
    "cluster",
})
_ONLY_DB_0 = ("this node belongs to a Redis Cluster, which has only database 0: use /0 or no "
              "database in the URL")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A validated Redis URL: what redis-py is given, what messages show, how to connect.

    ``cluster`` is ``True``/``False`` when the URL says so, ``None`` to ask the node.
    """

    url: str
    label: str
    cluster: bool | None
    setting: str

    def __repr__(self) -> str:
        return f"RedisURL({self.label!r}, cluster={self.cluster!r})"


def parse_redis_url(url: str, *, setting: str) -> RedisURL:
    """Validate ``url`` fully, so a typo fails at configuration time and not on a call.

    Raises :class:`ConfigError` naming ``setting`` and the URL with its secrets hidden.
    """
    label = redact_url(url)

    def bad(why: str) -> ConfigError:
        return ConfigError(setting, label, why)

    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise bad("the URL holds spaces, control or non-ASCII characters")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"the URL does not parse ({exc}); expected "
                  "redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://...") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise bad("the scheme must be redis://, rediss:// (TLS) or unix:// (a socket path)")
    if parts.scheme == "unix":
        if not parts.path:
            raise bad("a unix:// URL names the socket's path: unix:///run/redis.sock")
    elif not parts.hostname:
        raise bad("the URL has no host: expected redis://HOST[:PORT][/DB]")
    if port == 0:
        raise bad("the port must be in 1..65535")
    db_text = "" if parts.scheme == "unix" else parts.path.lstrip("/")
    if db_text and not (db_text.isascii() and db_text.isdigit()):
        raise bad(f"the database {db_text!r} must be a whole number, e.g. /0")
    db = int(db_text) if db_text else 0
    kept: list[tuple[str, str]] = []
    cluster: bool | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _QUERY_NAMES:
            raise bad(f"unknown query parameter {name!r}; accepted: "
                      + ", ".join(sorted(_QUERY_NAMES)))
        if name == "cluster":
            if value.lower() not in _BOOLEANS:
                raise bad(f"cluster={value!r} must be true or false")
            cluster = _BOOLEANS[value.lower()]
            continue
        if name == "db":
            if not (value.isascii() and value.isdigit()):
                raise bad(f"db={value!r} must be a whole number")
            db = int(value)
        if name.startswith("ssl_") and parts.scheme != "rediss":
            raise bad(f"{name} needs TLS: use rediss:// instead of redis://")
        kept.append((name, value))
    if cluster and parts.scheme == "unix":
        raise bad("a Redis Cluster is reached over TCP: use redis:// or rediss://")
    if cluster and db != 0:
        raise bad(f"a Redis Cluster has only database 0; drop /{db} from the URL")
    plain = urlunsplit((parts.scheme, parts.netloc, parts.path,
                        urlencode(kept, safe="/*:"), parts.fragment))
    return RedisURL(url=plain, label=label, cluster=cluster, setting=setting)


def open_redis(target: RedisURL, **options: Any) -> Any:
    """A redis-py client for ``target``: the cluster client when the node is in a cluster.

    ``options`` are redis-py connection options (timeouts, ``retry``, ``decode_responses``,
    ``protocol``); a cluster client also gets ``require_full_coverage=False``, so keys whose
    slots are served keep working while another slot has no master. Connection failures
    propagate as redis-py raises them (the callers decide what an outage means); a URL that
    contradicts the node raises :class:`ConfigError`.
    """
    try:
        import redis
        from redis.cluster import RedisCluster
        from redis.exceptions import RedisClusterException, ResponseError
    except ImportError as exc:
        raise ConfigError(target.setting, target.label,
                          "the redis package is needed: pip install 'resilient-llm[redis]'"
                          ) from exc
    cluster = target.cluster
    if target.url.startswith("unix://"):
        return redis.Redis.from_url(target.url, **options)
    if cluster is None or cluster is False:
        client = redis.Redis.from_url(target.url, **options)
        try:
            in_cluster = _cluster_enabled(client)
        except ResponseError as exc:
            client.close()
            if "not allowed in cluster mode" in str(exc):  # SELECT of a database other than 0
                raise ConfigError(target.setting, target.label, _ONLY_DB_0) from None
            raise
        except BaseException:
            client.close()
            raise
        if not in_cluster:
            return client
        client.close()
        if cluster is False:
            raise ConfigError(target.setting, target.label,
                              "the URL says cluster=false but this node belongs to a Redis "
                              "Cluster; drop cluster=false (the cluster is detected) or set "
                              "cluster=true")
        if urlsplit(target.url).path.strip("/") not in ("", "0"):
            raise ConfigError(target.setting, target.label, _ONLY_DB_0)
    try:
        return RedisCluster.from_url(target.url, require_full_coverage=False, **options)
    except RedisClusterException as exc:
        if "cluster mode is not enabled" in str(exc).lower():
            raise ConfigError(target.setting, target.label,
                              "the URL says cluster=true but this node is a single Redis "
                              "server, not a cluster node; drop cluster=true") from None
        raise


def _cluster_enabled(client: Any) -> bool:
    """Whether the node belongs to a cluster (``INFO cluster``; absent on old servers)."""
    info = client.info("cluster")
    return str(info.get("cluster_enabled", 0)) == "1"


def describe_redis_failure(exc: BaseException, target: RedisURL) -> str:
    """What happened, in words an operator acts on, with the setting to check.

    Distinguishes a moved slot, a cluster without a quorum, a refused login and a failed TLS
    handshake from a plain outage; never shows a password.
    """
    from redis import exceptions as rex

    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, (rex.AuthenticationError, rex.AuthorizationError)) or \
            text.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return (f"login refused ({name}): check the user and password of {target.setting}, "
                "and the ACL user's permissions (it needs ~* or the library's key prefixes, "
                "and EVALSHA/SCRIPT)")
    if isinstance(exc, ssl.SSLError) or "SSL" in text or "certificate" in text.lower():
        return (f"TLS failed ({name}: {text}): check the server's certificate against "
                f"ssl_ca_certs in {target.setting}, and its host name")
    if isinstance(exc, (rex.MovedError, rex.AskError)):
        return (f"a key's slot lives on another node ({name}: {text}): this is a Redis "
                f"Cluster; let the library detect it (no cluster=false in {target.setting})")
    if isinstance(exc, rex.ClusterDownError) or "CLUSTERDOWN" in text:
        return f"the cluster is down or a slot has no master ({name}: {text})"
    if isinstance(exc, rex.TimeoutError):
        return f"no answer in time ({name}: {text})"
    if isinstance(exc, (rex.ConnectionError, OSError)):
        return f"the node is unreachable ({name}: {text})"
    return f"{name}: {text}"
