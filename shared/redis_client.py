"""Every Redis connection FAMA makes, built in one place: a plain ``redis://``/``rediss://`` URL
or Redis Sentinel.

A Sentinel deployment is named by its sentinels, separated by ``;``, and the master's name
(``REDIS_SENTINEL_MASTER``)::

    REDIS_URL=sentinel://:password@sentinel-0:26379;sentinel://sentinel-1:26379;sentinel://sentinel-2:26379/0

The password (and the database number) may sit on any one of the addresses; they are the
master's. The sentinels themselves are asked without a password. Clients ask the sentinels
where the master is and ask again after a failover, so the app's clients and the Celery
broker follow a promoted replica without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from shared.settings import ServiceSettings

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    password: str | None
    username: str | None
    db: int


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelAddress:
    """The sentinels, the master's credentials and database of a ``sentinel://...;sentinel://...`` URL."""
    sentinels, password, username, db = [], None, None, 0
    for part in (p.strip() for p in url.split(";")):
        if not part:
            continue
        address = urlsplit(part)
        if address.scheme != SENTINEL_SCHEME or not address.hostname:
            raise ValueError(f"REDIS_URL: every address of a Sentinel URL must be sentinel://host:port, "
                             f"not {address.scheme or '(no scheme)'}://{address.hostname or ''}")
        sentinels.append((address.hostname, address.port or SENTINEL_PORT))
        password = unquote(address.password) if address.password else password
        username = unquote(address.username) if address.username else username
        path = address.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError("REDIS_URL: the database of a Sentinel URL must be a number (…/0)")
            db = int(path)
    if not sentinels:
        raise ValueError("REDIS_URL names no sentinel")
    return SentinelAddress(tuple(sentinels), password, username, db)


def redis_client(settings: ServiceSettings, *, timeout: float = 5.0) -> redis.Redis:
    """A client of the Redis ``settings`` name: the Sentinel's current master, or the URL's server."""
    if not is_sentinel(settings.redis_url):
        return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    address = parse_sentinel_url(settings.redis_url)
    sentinel = Sentinel(list(address.sentinels), socket_timeout=timeout, socket_connect_timeout=timeout)
    return sentinel.master_for(settings.redis_sentinel_master, socket_timeout=timeout,
                               socket_connect_timeout=timeout, password=address.password,
                               username=address.username, db=address.db)


def async_redis_client(settings: ServiceSettings, *, timeout: float = 5.0) -> redis.asyncio.Redis:
    """The asyncio twin of ``redis_client`` (the APIs' rate limits count without a thread hop)."""
    if not is_sentinel(settings.redis_url):
        return redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=timeout,
                                            socket_connect_timeout=timeout)
    address = parse_sentinel_url(settings.redis_url)
    sentinel = AsyncSentinel(list(address.sentinels), socket_timeout=timeout, socket_connect_timeout=timeout)
    return sentinel.master_for(settings.redis_sentinel_master, socket_timeout=timeout,
                               socket_connect_timeout=timeout, password=address.password,
                               username=address.username, db=address.db)


def broker(settings: ServiceSettings) -> tuple[str, dict]:
    """Celery's broker URL and the transport options the URL needs (kombu's ``sentinel://``
    transport reads the master's password and database from the first address and the master's
    name from ``master_name``)."""
    if not is_sentinel(settings.redis_url):
        return settings.redis_url, {}
    address = parse_sentinel_url(settings.redis_url)
    userinfo = ""
    if address.password is not None or address.username is not None:
        userinfo = f"{quote(address.username or '', safe='')}:{quote(address.password or '', safe='')}@"
    url = ";".join(f"{SENTINEL_SCHEME}://{userinfo}{host}:{port}/{address.db}" for host, port in address.sentinels)
    return url, {"master_name": settings.redis_sentinel_master}
