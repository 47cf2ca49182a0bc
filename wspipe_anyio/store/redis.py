"""The Redis (or Valkey) store, through coredis: leases, the registry, fleet members.

Keys (all under ``prefix``, default ``wspipe:``):

``lease:<client id>``   the holder instance's id, ``PX lease_ttl``
``parked:<client id>``  JSON ``{"instance", "principal"}`` while that session is parked
``handover:<instance>`` list of handover requests for that instance (JSON, at most 1000)
``export:<client id>``  a parked session's export on its way to another instance (30 s)
``registry``            hash: backend URL → JSON entry (``state``, ``weight``, ``migrate``)
``registry:version``    incremented with every registry change
``members``             sorted set: instance id → time of its last heartbeat (Redis's clock)
``instance:<id>``       JSON description of an instance (for ``GET /fleet``), ``PX member_ttl``

Every multi-step operation is one Lua script, so it is atomic. What is read back is
validated (types, sizes, counts); anything else is logged, counted and ignored.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Sequence
from typing import Any

import coredis
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from wspipe_core.store import ClaimResult, EntryState, RegistryEntry

from .address import StoreAddress

log = logging.getLogger("wspipe")

#: Most registry entries accepted; more is garbage.
MAX_ENTRIES = 10_000
#: Longest JSON value accepted for one registry entry or instance description.
MAX_VALUE = 4096
#: Longest backend URL accepted from the registry.
MAX_URL = 2048
#: Most instances listed by ``GET /fleet``.
MAX_INSTANCES = 1000

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {1, '', ''}
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {1, '', ''}
end
local parked = redis.call('GET', KEYS[2])
if parked ~= false then
  if ARGV[3] == '1' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) redis.call('DEL', KEYS[2])
    return {1, '', ''}
  end
  return {2, cur, parked}
end
return {0, cur, ''}
"""
_PARK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 1
end
return 0
"""
_UNPARK = """
local parked = redis.call('GET', KEYS[1])
if parked ~= false and cjson.decode(parked)['instance'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_HANDOVER = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -1000, -1)
redis.call('PEXPIRE', KEYS[1], 60000)
return 1
"""
_HANDOFF = """
redis.call('SET', KEYS[3], ARGV[3], 'PX', 30000)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
end
redis.call('DEL', KEYS[2])
return 1
"""
_TAKE = """
local v = redis.call('GET', KEYS[1])
if v ~= false then redis.call('DEL', KEYS[1]) end
return v
"""
_POP = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LPOP', KEYS[1])
  if v == false then break end
  out[i] = v
end
return out
"""
_RENEW = """
local lost = 0
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2])
  elseif cur == false then redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else lost = lost + 1 end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"""
_PUBLISH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
"""
_SEED = """
local n = 0
for i = 1, #ARGV, 2 do n = n + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
if n > 0 then redis.call('INCR', KEYS[2]) end
return n
"""
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
local v = redis.call('GET', KEYS[3])
return {v or '0', redis.call('ZCARD', KEYS[1])}
"""


def _entry_json(entry: RegistryEntry) -> str:
    return json.dumps({"state": entry.state.value, "weight": entry.weight,
                       "migrate": entry.migrate}, separators=(",", ":"))


def parse_entry(url: Any, raw: Any) -> RegistryEntry:
    """One registry entry read from the store; :class:`ValueError` if it is garbage."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
        raise ValueError("URL is not a string of 1..2048 characters")
    if not isinstance(raw, str) or len(raw) > MAX_VALUE:
        raise ValueError("value is not a string of at most 4096 characters")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("value is not a JSON object")
    state = data.get("state")
    weight = data.get("weight", 1.0)
    migrate = data.get("migrate", False)
    if state not in ("up", "draining"):
        raise ValueError(f"state must be up or draining, got {state!r}")
    if (not isinstance(weight, int | float) or isinstance(weight, bool)
            or not math.isfinite(weight) or weight <= 0):
        raise ValueError(f"weight must be a number > 0, got {weight!r}")
    if not isinstance(migrate, bool):
        raise ValueError(f"migrate must be true or false, got {migrate!r}")
    return RegistryEntry(url, EntryState(state), float(weight), migrate)


class RedisStore:
    """The store's operations over one coredis client. Use as an async context manager.

    :param address: Where and how to connect.
    :param prefix: Prefix of every key (several fleets can share one Redis).
    :param timeout: Connect and per-command socket timeout, seconds.
    """

    def __init__(self, address: StoreAddress, *, prefix: str = "wspipe:",
                 timeout: float = 1.0) -> None:
        self.prefix = prefix
        #: Garbage read from the store (entries or descriptions that failed validation);
        #: a registry entry counts (and is logged) once until its value changes.
        self.garbage = 0
        self._bad: dict[str, str] = {}
        self._sentinel: coredis.Sentinel[str] | None = None
        self._client: coredis.Redis[str]
        if address.sentinels:
            # The primary's address comes from the Sentinels on every new connection;
            # one that finds a replica (a failover under way) is refused, so the next
            # attempt asks the Sentinels again.
            self._sentinel = coredis.Sentinel(
                [TCPLocation(host, port) for host, port in address.sentinels],
                sentinel_kwargs={"connect_timeout": timeout, "stream_timeout": timeout},
                decode_responses=True, retry_policy=NoRetryPolicy())
            self._client = self._sentinel.primary_for(
                address.service or "", db=address.db, username=address.username,
                password=address.password, connect_timeout=timeout, stream_timeout=timeout,
                max_connections=8)
        else:
            context = ssl.create_default_context() if address.tls else None
            self._client = coredis.Redis(
                host=address.host, port=address.port, db=address.db,
                username=address.username, password=address.password, ssl=address.tls,
                ssl_context=context, decode_responses=True, connect_timeout=timeout,
                stream_timeout=timeout, max_connections=8, verify_version=False,
                retry_policy=NoRetryPolicy())  # our own timeouts and polling retry
        logging.getLogger("coredis").setLevel(logging.WARNING)  # (it logs each retry)

    async def __aenter__(self) -> RedisStore:
        if self._sentinel is not None:
            await self._sentinel.__aenter__()
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)
        if self._sentinel is not None:
            await self._sentinel.__aexit__(None, None, None)

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        return await self._client.eval(script, keys=list(keys), args=list(args))

    # -- leases

    async def claim(self, client_id: str, holder: str, ttl: float, *, steal: bool = False
                    ) -> tuple[ClaimResult, str, str | None]:
        """Take the lease unless another holder has it: (result, holder, principal).

        ``PARKED``: the holder's session is parked (``steal`` takes it anyway).
        """
        ok, current, parked = await self._eval(
            _CLAIM, [self._k("lease:" + client_id), self._k("parked:" + client_id)],
            [holder, _ms(ttl), "1" if steal else "0"])
        if ok == 1:
            return ClaimResult.OK, "", None
        if ok == 2:
            try:
                data = json.loads(parked) if len(parked) <= MAX_VALUE else None
            except ValueError:
                data = None
            principal = data.get("principal") if isinstance(data, dict) else None
            if not isinstance(data, dict) or not (principal is None or isinstance(principal, str)):
                self.garbage += 1
                log.warning("store: parked entry of client id %.60r is garbage: taken", client_id)
                return ClaimResult.TAKEN, str(current)[:200], None
            return ClaimResult.PARKED, str(current)[:200], principal
        return ClaimResult.TAKEN, str(current)[:200], None

    async def park(self, client_id: str, holder: str, principal: str | None,
                   ttl: float) -> None:
        """Mark ``holder``'s session of ``client_id`` parked for ``ttl`` seconds."""
        value = json.dumps({"instance": holder, "principal": principal})
        await self._eval(_PARK, [self._k("lease:" + client_id), self._k("parked:" + client_id)],
                         [holder, value, _ms(ttl)])

    async def unpark(self, client_id: str, holder: str) -> None:
        """The session is no longer parked (if it was ``holder``'s)."""
        await self._eval(_UNPARK, [self._k("parked:" + client_id)], [holder])

    async def handover(self, client_id: str, source: str, target: str) -> None:
        """Ask ``source`` for its parked session of ``client_id``, for ``target``."""
        request = json.dumps({"client_id": client_id, "target": target})
        await self._eval(_HANDOVER, [self._k("handover:" + source)], [request])

    async def handoff(self, client_id: str, holder: str, target: str, blob: bytes,
                      ttl: float) -> None:
        """Write the session's export for ``target`` and move the lease to it."""
        await self._eval(_HANDOFF, [self._k("lease:" + client_id),
                                    self._k("parked:" + client_id),
                                    self._k("export:" + client_id)],
                         [holder, target, blob.decode("utf-8"), _ms(ttl)])

    async def handovers(self, instance: str, count: int = 100) -> list[tuple[str, str]]:
        """Take up to ``count`` handover requests for ``instance``: (client id, target)."""
        raw = await self._eval(_POP, [self._k("handover:" + instance)], [count])
        out = []
        for item in raw or ():
            try:
                data = json.loads(item) if len(item) <= MAX_VALUE else None
            except (TypeError, ValueError):
                data = None
            if (isinstance(data, dict) and isinstance(data.get("client_id"), str)
                    and isinstance(data.get("target"), str)):
                out.append((data["client_id"][:MAX_URL], data["target"][:200]))
            else:
                self.garbage += 1
                log.warning("store: handover request %.100r ignored: not "
                            '{"client_id", "target"}', item)
        return out

    async def take_export(self, client_id: str) -> bytes | None:
        """The export of ``client_id``'s session, removed from the store, if it is there."""
        value = await self._eval(_TAKE, [self._k("export:" + client_id)], [])
        return value.encode("utf-8") if isinstance(value, str) else None

    async def renew(self, client_ids: Sequence[str], holder: str, ttl: float) -> int:
        """Extend (or write back) these leases; how many another holder has now."""
        lost = await self._eval(_RENEW, [self._k("lease:" + c) for c in client_ids],
                                [holder, _ms(ttl)])
        return int(lost)

    async def release(self, client_id: str, holder: str) -> None:
        """Delete the lease if ``holder`` still holds it."""
        await self._eval(_RELEASE, [self._k("lease:" + client_id),
                                    self._k("parked:" + client_id)], [holder])

    async def holder(self, client_id: str) -> str | None:
        """Who holds the lease of ``client_id`` (tests, ``GET /fleet``)."""
        value = await self._client.get(self._k("lease:" + client_id))
        return str(value) if value is not None else None

    # -- registry

    async def publish(self, entry: RegistryEntry) -> int:
        """Write ``entry``; the registry's new version."""
        return int(await self._eval(_PUBLISH, [self._k("registry"), self._k("registry:version")],
                                    [entry.url, _entry_json(entry)]))

    async def seed(self, entries: Sequence[RegistryEntry]) -> int:
        """Write the entries whose URL is missing; how many were."""
        if not entries:
            return 0
        args: list[str | int] = []
        for entry in entries:
            args += [entry.url, _entry_json(entry)]
        return int(await self._eval(_SEED, [self._k("registry"), self._k("registry:version")],
                                    args))

    async def registry(self) -> tuple[RegistryEntry, ...]:
        """Every valid entry of the registry (garbage is logged, counted, skipped)."""
        raw = await self._client.hgetall(self._k("registry"))
        if len(raw) > MAX_ENTRIES:
            self.garbage += 1
            log.warning("store: the registry has %d entries (over %d): ignored", len(raw),
                        MAX_ENTRIES)
            return ()
        out = []
        bad: dict[str, str] = {}
        for url, value in raw.items():
            try:
                out.append(parse_entry(url, value))
            except ValueError as exc:  # (json.JSONDecodeError is one)
                bad[url] = value
                if self._bad.get(url) != value:
                    self.garbage += 1
                    log.warning("store: registry entry %.100r ignored: %s", url, exc)
        self._bad = bad
        return tuple(out)

    # -- members

    async def heartbeat(self, instance: str, description: dict[str, Any],
                        ttl: float) -> tuple[int, int]:
        """Say this instance is alive; (registry version, live instances)."""
        text = json.dumps(description, separators=(",", ":"))[:MAX_VALUE]
        version, members = await self._eval(
            _HEARTBEAT, [self._k("members"), self._k("instance:" + instance),
                         self._k("registry:version")], [instance, _ms(ttl), text])
        try:
            return int(version), int(members)
        except (TypeError, ValueError):
            self.garbage += 1
            log.warning("store: registry version %.50r is not a number: reloading", version)
            return -1, int(members)

    async def instances(self) -> list[dict[str, Any]]:
        """The descriptions of the live instances (for ``GET /fleet``)."""
        ids = await self._client.zrange(self._k("members"), 0, MAX_INSTANCES - 1)
        if not ids:
            return []
        values = await self._client.mget([self._k("instance:" + str(i)) for i in ids])
        out = []
        for ident, value in zip(ids, values, strict=True):
            if value is None:
                continue
            try:
                data = json.loads(value) if len(value) <= MAX_VALUE else None
            except ValueError:
                data = None
            if not isinstance(data, dict):
                self.garbage += 1
                log.warning("store: description of instance %.60r ignored: not a JSON object",
                            ident)
                continue
            data["instance"] = str(ident)
            out.append(data)
        return out


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
