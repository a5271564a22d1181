"""The assignment watchdog: a group consumer that gets no partitions joins again.

A consumer of a group can be left waiting for an assignment for ever, through no fault of its
own: on Tansu 0.6 a group whose elected leader left before syncing keeps that leader, refuses
every other member's sync and never forms again (streams/groups.py); other brokers and clients
have their own ways of wedging a join. The process is alive, its heartbeat looks fine, it just
never owns anything (``/readyz`` stays false).

:class:`AssignmentWatchdog` is the pure part: it knows since when the consumer has been waiting
for an assignment (from its start, or from a revocation, until the next assignment — an empty
assignment counts: a worker with more peers than partitions is idle, not stuck).
:class:`WatchedConsumer` starts the consumer (whose ``start()`` waits for the first assignment)
and, when the wait passes the bound while the subscribed topics have partitions, logs a WARNING,
stops it (its member leaves the group), repairs a group whose leader is not a member, and starts
a new consumer (a new member), the bound applying again to each attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger("cashpos.watchdog")


class AssignmentWatchdog:
    """Since when a consumer has been without an assignment; no I/O."""

    def __init__(self, bound_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound_seconds
        self.clock = clock
        self.waiting_since: float | None = None
        self.rejoins = 0

    def joining(self) -> None:
        """The consumer starts, or lost its partitions: it waits for an assignment from now."""
        if self.waiting_since is None:
            self.waiting_since = self.clock()

    def assigned(self) -> None:
        """A rebalance completed (even with no partitions for this member)."""
        self.waiting_since = None

    def waited(self) -> float:
        return 0.0 if self.waiting_since is None else self.clock() - self.waiting_since

    def overdue(self, partitions: int) -> bool:
        """True when the wait passed the bound while the topics have partitions to assign."""
        return partitions > 0 and self.waiting_since is not None and self.waited() > self.bound

    def restarted(self) -> None:
        """The stuck consumer is being replaced."""
        self.rejoins += 1

    def attempt(self) -> None:
        """A new consumer starts: the bound applies from now (not from the stuck one's wait)."""
        self.waiting_since = self.clock()


class _Listener(ConsumerRebalanceListener):
    """Tells the watchdog about rebalances, then hands them on."""

    def __init__(self, watchdog: AssignmentWatchdog, inner: ConsumerRebalanceListener) -> None:
        self.watchdog = watchdog
        self.inner = inner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.watchdog.joining()
        await self.inner.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.inner.on_partitions_assigned(assigned)
        self.watchdog.assigned()


class WatchedConsumer:
    """Starts a group consumer under the watchdog and starts a new one when it is stuck.

    ``make`` builds a fresh, unstarted consumer; ``adopt`` is told of each one before it starts
    (its rebalance callbacks may use it); ``repair`` runs between a stuck consumer's stop and the
    next start (errors logged, never raised).
    """

    def __init__(
        self,
        make: Callable[[], AIOKafkaConsumer],
        adopt: Callable[[AIOKafkaConsumer], None],
        topics: list[str],
        listener: ConsumerRebalanceListener,
        watchdog: AssignmentWatchdog,
        group: str,
        member: str,
        repair: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.make = make
        self.adopt = adopt
        self.topics = topics
        self.listener = _Listener(watchdog, listener)
        self.watchdog = watchdog
        self.group = group
        self.member = member
        self.repair = repair
        self.consumer: AIOKafkaConsumer | None = None
        self._closed = False
        self._starting: asyncio.Task[None] | None = None

    def partitions(self) -> int:
        """Partitions of the subscribed topics, as the consumer's metadata knows them."""
        if self.consumer is None:
            return 0
        return sum(len(self.consumer.partitions_for_topic(t) or ()) for t in self.topics)

    async def start(self) -> None:
        """Start a consumer; return once it has an assignment (starting new ones as needed)."""
        while not self._closed:
            consumer = self.make()
            consumer.subscribe(self.topics, listener=self.listener)
            self.consumer = consumer
            self.adopt(consumer)
            self.watchdog.attempt()
            self._starting = asyncio.ensure_future(consumer.start())
            try:
                while True:
                    done, _ = await asyncio.wait({self._starting}, timeout=1.0)
                    if done:
                        self._starting.result()
                        return
                    if self._closed:
                        return
                    if self.watchdog.overdue(self.partitions()):
                        break
            finally:
                if self._starting is not None and not self._starting.done():
                    self._starting.cancel()
                    with contextlib.suppress(BaseException):
                        await self._starting
                self._starting = None
            await self._recover()

    async def check(self) -> bool:
        """Called from the poll loop: True when the consumer was replaced."""
        if self._closed or self.watchdog.waiting_since is None:
            return False  # the common case, per poll: nothing to compute
        if not self.watchdog.overdue(self.partitions()):
            return False
        await self._recover()
        await self.start()
        return True

    async def _recover(self) -> None:
        waited = self.watchdog.waited()
        self.watchdog.restarted()
        log.warning(
            "no partition assignment: leaving the group and joining again %s",
            orjson.dumps(
                {
                    "event": "assignment_watchdog",
                    "group": self.group,
                    "member": self.member,
                    "waited_s": round(waited, 1),
                    "bound_s": self.watchdog.bound,
                    "partitions": self.partitions(),
                    "rejoins": self.watchdog.rejoins,
                }
            ).decode(),
        )
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:  # its member leaves the group; bounded: a wedged coordinator must not hang us
                await asyncio.wait_for(consumer.stop(), timeout=max(10.0, self.watchdog.bound))
            except Exception as exc:  # noqa: BLE001 - a new consumer is started regardless
                log.warning("stopping the stuck consumer failed: %r", exc)
        if self.repair is not None and not self._closed:
            try:
                repaired = await asyncio.wait_for(self.repair(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - the rejoin is tried regardless
                log.warning("group repair failed: %r", exc)
            else:
                if repaired:
                    log.warning(
                        "group %s had a leader that was no member (%s): repaired", self.group, repaired
                    )

    async def stop(self) -> None:
        """Stop for good (also while a start is waiting for its assignment)."""
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
