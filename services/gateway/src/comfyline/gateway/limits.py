"""Limits that every gateway replica shares: rate limits, active jobs, queue caps, spend quotas.

Rate limits are fixed windows counted in the ``ratelimits`` KV bucket (key
``<owner>.<class>.<window>``, created with a per-key TTL, incremented with compare-and-set), so
any number of gateway replicas draw on one budget and a restart forgets nothing. Every limit has
a default in :class:`LimitSettings`; an API key's ``limits`` override it per owner (e.g.
``{"submit_per_min": 1000, "active_jobs": 500}`` for a load-test key).

A gateway that counts many requests of one owner and class takes them from the shared counter
in blocks (a lease): one compare-and-set adds a block to the counter, and the next requests of
that block are counted in memory, with no round trip. A block grows (doubling, up to 64 and to
a sixteenth of the limit) while each is used up within a second of the last, and falls back to
a few requests when traffic slows (up to 4, and a sixteenth of the limit: a key's requests a
second or more apart then make a round trip once in four), so a small budget is counted
request by request, as before. The counter never falls short of what was let through: a block
is counted before any of its requests passes, so replicas together never exceed the limit. A
block's unused part when the window ends (or its gateway stops) is lost to that window, which
can only refuse a little early under traffic spread over several replicas, never let more
through.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import (
    ActiveJobs,
    EndedJobs,
    ErrorCode,
    ModelTemplate,
    UsageRecord,
    active_jobs_key,
    ended_jobs_key,
)
from comfyline.runtime import LastWrites, cas_pause

from .auth import Principal
from .errors import ApiError
from .kv import get_model, nats_errors, scan
from .settings import LimitSettings

Entry = KeyValue.Entry
RouteClass = Literal["submit", "enhance", "status", "upload", "keys"]
_CAS_ATTEMPTS = 25
_COUNTS_KEPT = 10_000
#: A rate-limit block grows while each is used up within this many seconds of the last.
_LEASE_GROW_S = 1.0
_LEASE_MAX = 64
#: The block a request takes after a pause (at most a sixteenth of the limit).
_LEASE_LONE = 4


@dataclass(slots=True)
class _Lease:
    """Requests of one rate-limit counter taken ahead by this gateway (see the module doc)."""

    #: The counter's value this gateway wrote, its block included.
    counted: int = 0
    #: The block's requests not let through yet.
    unused: int = 0


@dataclass(slots=True)
class _Pace:
    """How large the next block of an owner's route class is, and when the last was taken."""

    size: int = 1
    taken_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one rate-limited request."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    window_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` (IETF draft) and ``X-RateLimit-*`` (common practice) headers."""
        reset_at = int(time.time()) + self.reset_s
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w={self.window_s}",
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(reset_at),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset_s))
        return out


class Limits:
    """Checks an owner's request against its limits; raises :class:`ApiError` when over."""

    def __init__(self, settings: LimitSettings, ratelimits: KeyValue, usage: KeyValue) -> None:
        self.settings = settings
        self.ratelimits = ratelimits
        self.usage = usage
        #: The last count this gateway wrote of each rate-limit key: the next request of that
        #: key compare-and-sets against it without reading first (one round trip).
        self._counts: LastWrites[int] = LastWrites(_COUNTS_KEPT)
        #: One turn at a time per counter in this process: requests of one gateway never race
        #: each other's compare-and-sets (only another replica's write can make one retry).
        self._turns: dict[str, asyncio.Lock] = {}
        #: The last accepted-jobs count this gateway wrote of each owner, and the ended-jobs
        #: count it last read (see reserve_active).
        self._active: LastWrites[ActiveJobs] = LastWrites(_COUNTS_KEPT)
        self._ended_counts: dict[str, int] = {}
        #: The block of each rate-limit counter this gateway holds, and each owner and route
        #: class's block size.
        self._leases: dict[str, _Lease] = {}
        self._paces: dict[str, _Pace] = {}

    def limit_of(self, principal: Principal, name: str, default: float | None) -> float | None:
        """A limit for this caller: the key's override, else the default."""
        value = principal.limits.get(name)
        return float(value) if value is not None else default

    # --- rate limits -----------------------------------------------------------------------
    def _turn(self, key: str) -> asyncio.Lock:
        lock = self._turns.get(key)
        if lock is None:
            if len(self._turns) >= _COUNTS_KEPT:
                for idle in [k for k, v in self._turns.items() if not v.locked()]:
                    del self._turns[idle]
            lock = self._turns[key] = asyncio.Lock()
        return lock

    async def rate(self, principal: Principal, route_class: RouteClass) -> RateDecision:
        """Count one request of ``route_class``; the decision carries the headers to send."""
        name = f"{route_class}_per_min"
        default = float(getattr(self.settings, name))
        limit = int(self.limit_of(principal, name, default) or 0)
        window_s = self.settings.window_s
        now = time.time()
        window = int(now // window_s)
        reset_s = max(1, math.ceil((window + 1) * window_s - now))
        pace_key = f"{principal.owner}.{route_class}"
        key = f"{pace_key}.{window}"
        taken = self._from_lease(key, limit, reset_s, window_s)
        if taken is not None:
            return taken
        async with self._turn(key):  # (another request may have taken a block meanwhile)
            taken = self._from_lease(key, limit, reset_s, window_s)
            block = self._block(pace_key, limit) if taken is None else 1
            return taken or await self._count(key, limit, reset_s, window_s, block)

    def _from_lease(self, key: str, limit: int, reset_s: int, window_s: int) -> RateDecision | None:
        """A request let through from this gateway's block of ``key``, if one is left."""
        lease = self._leases.get(key)
        if lease is None or lease.unused <= 0:
            return None
        lease.unused -= 1
        remaining = max(0, limit - lease.counted + lease.unused)
        return RateDecision(True, limit, remaining, reset_s, window_s)

    def _block(self, pace_key: str, limit: int) -> int:
        """How many requests the next compare-and-set of this owner and class counts."""
        pace = self._paces.get(pace_key)
        if pace is None:
            if len(self._paces) >= _COUNTS_KEPT:
                self._paces.clear()
            pace = self._paces[pace_key] = _Pace()
        now = time.monotonic()
        quick = now - pace.taken_at < _LEASE_GROW_S
        most = max(1, limit // 16)
        pace.size = min(pace.size * 2, _LEASE_MAX, most) if quick else min(_LEASE_LONE, most)
        pace.taken_at = now
        return pace.size

    async def _count(
        self, key: str, limit: int, reset_s: int, window_s: int, block: int = 1
    ) -> RateDecision:
        """One more request under ``key`` if ``limit`` allows (compare-and-set, retried);
        with it, up to ``block - 1`` more are counted ahead for the next requests."""
        for attempt in range(1, _CAS_ATTEMPTS + 1):
            async with nats_errors("rate limit"):
                known = self._counts.take(key) if attempt == 1 else None
                if known is not None:
                    count, revision = known
                else:
                    try:
                        entry: Entry | None = await self.ratelimits.get(key)
                    except KeyNotFoundError:  # the first request of this window
                        entry = None
                    count = int(entry.value or b"0") if entry is not None else 0
                    revision = entry.revision or 0 if entry is not None else 0
                try:
                    if count >= limit or limit < 1:
                        return RateDecision(False, limit, 0, reset_s, window_s)
                    taken = min(block, limit - count)
                    value = str(count + taken).encode()
                    if revision:
                        revision = await self.ratelimits.update(key, value, last=revision)
                    else:
                        revision = await self.ratelimits.create(
                            key, value, msg_ttl=float(window_s * 2)
                        )
                    self._counts.remember(key, count + taken, revision)
                    self._lease(key, count + taken, taken - 1)
                    return RateDecision(True, limit, max(0, limit - count - 1), reset_s, window_s)
                except KeyWrongLastSequenceError:
                    pass  # another request (or replica) counted first: read again
            await cas_pause(attempt)
        return RateDecision(False, limit, 0, reset_s, window_s)

    def _lease(self, key: str, counted: int, unused: int) -> None:
        if unused <= 0:
            self._leases.pop(key, None)
            return
        if len(self._leases) >= _COUNTS_KEPT:
            self._leases.clear()
        self._leases[key] = _Lease(counted, unused)

    # --- active jobs, queue caps -------------------------------------------------------------
    async def reserve_active(
        self,
        principal: Principal,
        count: int = 1,
        beside: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Count ``count`` more unfinished jobs for the owner, or 429 (none counted) past its cap.

        Compare-and-set on the owner's accepted count (``active.<owner>`` in the ``usage``
        bucket), so two replicas accepting at once cannot both pass the cap; the orchestrator
        counts the job ended (``ended.<owner>``) when it ends. Only gateways write the accepted
        count, so this gateway sets it against the revision it wrote last, with no read first.
        The ended count it knows may be old: that only counts too many jobs as not ended, so a
        count over the cap is checked again against the ended count read now before refusing.

        ``beside`` (publishing the job) runs beside that compare-and-set when the count this
        gateway wrote last has room: both leave together, one round trip instead of two (it
        raised: the slot is given back). The caller knows by its effect whether it ran, and runs
        it after otherwise. With one gateway the write never loses. When another replica wrote
        since and the owner turns out to be at the cap, the 429 comes after ``beside`` ran, and
        the caller undoes it.
        """
        cap = int(self.limit_of(principal, "active_jobs", self.settings.active_jobs) or 0)
        key = active_jobs_key(principal.owner)
        async with self._turn(key):
            await self._reserve(principal, key, cap, count, beside)

    async def _ended(self, owner: str, fresh: bool) -> int:
        """How many of the owner's jobs ended: as last read here, or read now (``fresh``)."""
        key = ended_jobs_key(owner)
        known = self._ended_counts.get(key)
        if known is not None and not fresh:
            return known
        found = await get_model(self.usage, key, EndedJobs)
        ended = found[0].count if found is not None else 0
        if len(self._ended_counts) >= _COUNTS_KEPT:
            self._ended_counts.clear()
        self._ended_counts[key] = ended
        return ended

    async def _reserve(
        self,
        principal: Principal,
        key: str,
        cap: int,
        count: int,
        beside: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        ran = False
        for attempt in range(1, _CAS_ATTEMPTS + 1):
            found = self._active.take(key) if attempt == 1 else None
            fresh = found is None  # only counts read now may refuse
            if fresh:
                found = await get_model(self.usage, key, ActiveJobs)
            accepted, revision = found or (ActiveJobs(owner=principal.owner), 0)
            ended = await self._ended(principal.owner, fresh=False)
            if accepted.count + count - ended > cap:
                ended = await self._ended(principal.owner, fresh=True)
            active = max(0, accepted.count - ended)
            if active + count > cap and not fresh:
                continue
            if active + count > cap:
                raise ApiError(
                    429,
                    ErrorCode.TOO_MANY_ACTIVE_JOBS,
                    f"too many active jobs ({active} of {cap}"
                    + (f", {count} more asked" if count > 1 else "")
                    + "); wait for one to finish",
                    details={"active": active, "limit": cap}
                    | ({"asked": count} if count > 1 else {}),
                    headers={"Retry-After": "5"},
                )
            accepted.count += count
            if beside is not None and not ran and not fresh:
                ran = True
                write = self._write(key, accepted.to_bytes(), revision)
                answers: tuple[Any, ...] = await asyncio.gather(
                    write, beside(), return_exceptions=True
                )
                if isinstance(answers[0], BaseException):
                    raise answers[0]
                written = int(answers[0])
                if isinstance(answers[1], BaseException):
                    if written:
                        self._active.remember(key, accepted, written)
                        await self._release(key, count)
                    raise answers[1]
            else:
                written = await self._write(key, accepted.to_bytes(), revision)
            if written:
                self._active.remember(key, accepted, written)
                return
            if fresh:  # another replica won a race: pause; a count known here is just re-read
                await cas_pause(attempt)
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "the active-jobs count is contended")

    async def release_active(self, principal: Principal, count: int = 1) -> None:
        """Give back ``count`` slots whose jobs were never published."""
        key = active_jobs_key(principal.owner)
        async with self._turn(key):
            await self._release(key, count)

    async def _release(self, key: str, count: int) -> None:
        for attempt in range(1, _CAS_ATTEMPTS + 1):
            found = self._active.take(key) if attempt == 1 else None
            if found is None:
                found = await get_model(self.usage, key, ActiveJobs)
            if found is None or found[0].count == 0:
                return
            accepted, revision = found
            accepted.count = max(0, accepted.count - count)
            written = await self._write(key, accepted.to_bytes(), revision)
            if written:
                self._active.remember(key, accepted, written)
                return
            await cas_pause(attempt)

    async def _write(self, key: str, value: bytes, revision: int) -> int:
        """Compare-and-set; the new revision, or 0 when another writer came first."""
        try:
            async with nats_errors(f"writing {key}"):
                if revision:
                    return await self.usage.update(key, value, last=revision)
                return await self.usage.create(key, value)
        except KeyWrongLastSequenceError:
            return 0

    def queue_cap(self, principal: Principal, template: ModelTemplate) -> int:
        """The backlog cap of ``template`` for this caller (the key may override it)."""
        return int(self.limit_of(principal, "max_queue", template.max_queue) or 0)

    def check_queue(self, principal: Principal, template: ModelTemplate, depth: int) -> None:
        """503 with ``Retry-After`` when the model's backlog is full."""
        cap = self.queue_cap(principal, template)
        if depth >= cap:
            raise ApiError(
                503,
                ErrorCode.QUEUE_FULL,
                f"the queue of {template.name} is full; try again shortly",
                details={"model": template.name, "queue_depth": depth, "limit": cap},
                headers={"Retry-After": "10"},
            )

    # --- spend quotas ------------------------------------------------------------------------
    async def check_quota(self, principal: Principal) -> None:
        """429 when the owner's spend today (or this month) has reached its quota."""
        day_cap = self.limit_of(principal, "spend_per_day", self.settings.spend_per_day)
        month_cap = self.limit_of(principal, "spend_per_month", self.settings.spend_per_month)
        if day_cap is None and month_cap is None:
            return
        now = datetime.now(UTC)
        today = now.strftime("%Y-%m-%d")
        if day_cap is not None:
            spent = await self.spend(f"{principal.owner}.*.{today}", today)
            if spent >= day_cap:
                tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                raise self._over("day", spent, day_cap, tomorrow - now)
        if month_cap is not None:
            month = now.strftime("%Y-%m")
            spent = await self.spend(f"{principal.owner}.>", month)
            if spent >= month_cap:
                first = (now.replace(day=1) + timedelta(days=32)).replace(
                    day=1, hour=0, minute=0, second=0
                )
                raise self._over("month", spent, month_cap, first - now)

    async def usage_records(self, owner: str) -> list[UsageRecord]:
        """The owner's usage records (``owner`` as an owner token), unreadable ones skipped."""
        return await self._records(f"{owner}.>")

    async def spend(self, pattern: str, period_prefix: str) -> float:
        """The cost of the usage records under ``pattern`` in the period ``period_prefix``."""
        records = await self._records(pattern)
        return sum((r.cost for r in records if r.day.startswith(period_prefix)), 0.0)

    async def _records(self, pattern: str) -> list[UsageRecord]:
        """The usage records under ``pattern``; other records whose keys match (the counts of
        an owner named ``active`` or ``ended``) and unreadable ones are skipped."""
        records = []
        for _, raw in await scan(self.usage, pattern):
            try:
                records.append(UsageRecord.from_bytes(raw))
            except ValueError:
                continue
        return records

    @staticmethod
    def _over(period: str, spent: float, cap: float, wait: timedelta) -> ApiError:
        return ApiError(
            429,
            ErrorCode.QUOTA_EXCEEDED,
            f"spend quota for this {period} reached ({spent:.2f} of {cap:.2f} USD)",
            details={"period": period, "spent": round(spent, 6), "limit": cap},
            headers={"Retry-After": str(max(1, int(wait.total_seconds())))},
        )
