"""Fleet flags of ``wspipe serve`` (``--store``, ``--workers``, ...) and ``wspipe fleet``.

Every flag has a config-file key of the same name (``store``, ``store_password_file``,
``store_prefix``, ``instance_id``, ``workers``); ``lease_ttl`` and ``store_timeout`` are
:class:`wspipe_core.ProxyConfig` keys. The store password comes from
``--store-password-file`` or the ``WSPIPE_STORE_PASSWORD`` environment variable (a
password in the URL works too, but then it is on the command line); it is never logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import TYPE_CHECKING, Any

from wspipe_core import ProxyConfig

from .store import StoreAddress, StoreURLError, read_password

if TYPE_CHECKING:
    from .store.redis import RedisStore

#: Driver keys of the fleet.
FLEET_KEYS = frozenset({"store", "store_password_file", "store_prefix", "instance_id",
                        "workers", "worker"})
FLEET_DEFAULTS: dict[str, Any] = {"store": None, "store_password_file": None,
                                  "store_prefix": "wspipe:", "instance_id": None,
                                  "workers": 1, "worker": False}
#: Most workers ``--workers`` starts.
MAX_WORKERS = 64


def add_fleet_flags(serve: argparse.ArgumentParser) -> None:
    """Add the fleet flags to the ``serve`` parser."""
    add = serve.add_argument
    add("--store", metavar="URL",
        help="share client-id leases and the pool registry with other instances through "
             "Redis or Valkey: redis://HOST:PORT/DB, rediss://... or, through Sentinel, "
             "redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB] (password: "
             "WSPIPE_STORE_PASSWORD or --store-password-file)")
    add("--store-password-file", metavar="FILE", help="file holding the store password")
    add("--store-prefix", metavar="PREFIX", help="prefix of the store's keys (wspipe:)")
    add("--lease-ttl", metavar="SECONDS",
        help="a client-id lease lives this long without renewal: a killed instance's "
             "client ids are free again after it (10)")
    add("--store-timeout", metavar="SECONDS",
        help="longest wait for the store; a claim then fails open (1)")
    add("--instance-id", metavar="ID", help="this instance's id in the fleet "
        "(default: host, pid and a random tag)")
    add("--workers", type=int, metavar="N",
        help="run N processes sharing the listen sockets (SO_REUSEPORT); needs --store")
    add("--worker", action="store_const", const=True, help=argparse.SUPPRESS)


@dataclasses.dataclass(frozen=True)
class FleetOptions:
    """The validated fleet settings of ``wspipe serve``."""

    url: str
    address: StoreAddress
    prefix: str
    instance: str | None
    workers: int
    #: This process is one of ``--workers`` (bind with SO_REUSEPORT).
    worker: bool

    def store(self, config: ProxyConfig) -> RedisStore:
        """A store client for this instance.

        :raises ValueError: the ``redis`` extra (coredis) is not installed.
        """
        try:
            from .store.redis import RedisStore
        except ImportError:
            raise ValueError("--store needs the Redis client: pip install 'wspipe[redis]'"
                             ) from None
        return RedisStore(self.address, prefix=self.prefix, timeout=config.store_timeout)


def fleet_options(driver: dict[str, Any], config: ProxyConfig) -> FleetOptions | None:
    """Validate the fleet keys; ``None`` without a store.

    :raises ValueError: with one line saying what is wrong.
    """
    workers = driver["workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or not (
            1 <= workers <= MAX_WORKERS):
        raise ValueError(f"workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}")
    url = driver["store"]
    if url is None:
        if workers > 1:
            raise ValueError("--workers needs --store: the workers share client-id leases "
                             "and the pool registry through it")
        return None
    if not isinstance(url, str):
        raise ValueError(f"store must be a redis://, rediss:// or redis+sentinel:// URL, "
                         f"got {url!r}")
    prefix = driver["store_prefix"]
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{0,64}", prefix):
        raise ValueError(f"store_prefix must be up to 64 of A-Z a-z 0-9 _ . : -, got {prefix!r}")
    instance = driver["instance_id"]
    if instance is not None and (not isinstance(instance, str)
                                 or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", instance)):
        raise ValueError("instance_id must be 1 to 100 of A-Z a-z 0-9 _ . : -")
    try:
        password = read_password(path=driver["store_password_file"])
    except OSError as exc:
        raise ValueError(f"cannot read store_password_file: {exc.strerror or exc}") from None
    try:
        address = StoreAddress.parse(url, password=password)
    except StoreURLError as exc:
        raise ValueError(str(exc)) from None
    return FleetOptions(url, address, prefix, instance, workers, bool(driver["worker"]))
