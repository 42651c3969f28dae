"""One hub per web process (per event loop): local rooms, presence, and the channel layer.

Peers of a room on the same process are relayed to directly, through each member's
``deliver``, with no trip through Redis. Each process reads one channel-layer channel
of its own (``signalling.<client>!<id>``); a message for members on other processes goes
to those processes' channels once per process, and consecutive messages for the same
process leave together in one ``signalling.batch``. Meeting status pushes reach the
processes through the group ``signalling.status.<meeting_id>``, whose members are these
process channels: a process is in it while one of its sockets is subscribed to the meeting or
in its room. A terminal status closes the room: its members here get ``roomClosed`` and are
removed (``RoomMember.room_closed``); every other process does the same for its own.

Room membership lives in Redis (``signalling.presence``) and is refreshed every
``ttl / 3``; on each refresh the hub reconciles its view of the members on other
processes, so members of a process that vanished, or joins and leaves lost in a Redis
outage, still reach the clients within a few seconds. The reading loop and the refresh
survive Redis errors (they back off and retry, ``elephant.backoff.Backoff``); a Redis
restart loses nothing the refresh does not rebuild.

The interface, both ways, and nothing else crosses it (no attribute of the other side is
read or written):

- What the hub may do with a socket: ``RoomMember`` below, ``connection_id``,
  ``deliver(text)``, ``evicted(room_id)`` and ``room_closed(room_id)``. ``signalling.consumers.SignallingConsumer`` is
  the one implementation.
- What a socket may ask of the hub (``await get_hub()``): ``join``, ``announce_join``,
  ``participants``, ``leave`` and ``relay`` for rooms; ``subscribe`` and ``unsubscribe``
  for status push. The hub keeps each member's identity per room itself (handed to
  ``join``) for the presence refresh.
"""

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Protocol

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from elephant.backoff import Backoff
from signalling.presence import Presence

logger = logging.getLogger(__name__)

# How long a batch for another process is retried while Redis is unreachable; then it and
# everything queued behind it for that process are dropped (stale signalling is useless).
OUTBOX_RETRY_SECONDS = 10.0
# Items waiting for one other process; more are dropped (Redis down or far too slow).
OUTBOX_MAX_ITEMS = 5000
# Items per channel-layer message.
BATCH_MAX_ITEMS = 200
# A remote member missing from this many consecutive presence reads is gone.
MISSES_BEFORE_GONE = 2
# Status groups are re-joined this often (group membership in Redis expires after a day).
STATUS_GROUP_REFRESH_SECONDS = 3600.0


def status_group(meeting_id: str) -> str:
    return f"signalling.status.{meeting_id}"


def frame(**fields) -> str:
    return json.dumps(fields, separators=(",", ":"))


class RoomMember(Protocol):
    """One socket, as the hub sees it."""

    connection_id: str

    async def deliver(self, text: str) -> None:
        """Send ``text`` as one text frame. Never raises: a socket whose send fails is
        closing, and closes itself; whoever was sending carries on."""

    async def evicted(self, room_id: str) -> None:
        """The hub has removed this member from ``room_id``: the same participant connected
        again. The member forgets the room and closes (4009); it does not call ``leave``."""

    async def room_closed(self, room_id: str) -> None:
        """The meeting has ended: the hub has told the member (``roomClosed``) and removed it
        from ``room_id``. The member forgets the room and stays open; it does not call ``leave``."""


@dataclass
class RemoteMember:
    process: str
    misses: int = 0


class Hub:
    def __init__(self, layer):
        if layer is None or not hasattr(layer, "connection"):
            raise ImproperlyConfigured("Signalling needs the Redis channel layer (CHANNEL_LAYERS)")
        self.layer = layer
        self.presence = Presence(layer.connection(0), layer.prefix)
        self.ttl = settings.ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS
        self.capacity = settings.ELEPHANT_ROOM_CAPACITY
        self.channel = ""
        self.rooms: dict[str, dict[str, RoomMember]] = {}  # room -> connection id -> local member
        self.identities: dict[tuple[str, str], str] = {}  # (room, connection id) -> identity, local members
        self.remote: dict[str, dict[str, RemoteMember]] = {}  # room -> connection id -> member elsewhere
        self.tombstones: dict[str, float] = {}  # connection ids that left, so a stale read does not revive them
        self.subscribers: dict[str, set[RoomMember]] = {}  # meeting id -> local members
        self.outbox: dict[str, list] = {}
        self.outbox_dropped = 0
        self.flushers: dict[str, asyncio.Task] = {}
        self.tasks: list[asyncio.Task] = []
        self.resync = False
        self.stopping = False
        self.status_groups_at = 0.0
        self.ready = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        self.channel = await self.layer.new_channel("signalling")
        self.tasks = [asyncio.ensure_future(self._receive_loop()), asyncio.ensure_future(self._refresh_loop())]

    async def stop(self) -> None:
        # Cancelling a channel-layer receive mid-BZPOPMIN can take until the pop times out,
        # so the reading loop is woken with a message of its own and left to finish.
        self.stopping = True
        await self.ready
        receiver, *others = [*self.tasks, *self.flushers.values()]
        for task in others:
            task.cancel()
        try:
            await asyncio.wait_for(self.layer.send(self.channel, {"type": "signalling.stop"}), 2)
            await asyncio.wait_for(asyncio.shield(receiver), 2)
        except Exception:
            receiver.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # --- rooms ----------------------------------------------------------------------------
    async def join(self, member: RoomMember, room_id: str, identity: str) -> list[str] | None:
        """Admit ``member``; its older connections of the same identity are evicted.

        Returns the connection ids already in the room, or None when the room is full.
        Redis errors propagate: the caller answers ``unavailable``.
        """
        result = await self.presence.join(
            room_id=room_id,
            connection_id=member.connection_id,
            identity=identity,
            process=self.channel,
            ttl=self.ttl,
            capacity=self.capacity,
        )
        if not result.admitted:
            return None
        local = self.rooms.setdefault(room_id, {})
        remote = self.remote.setdefault(room_id, {})
        for replaced in result.replaced:
            await self._evict(room_id, replaced.connection_id, replaced.process)
        for other in result.others:
            if other.connection_id not in local and other.process != self.channel:
                remote.setdefault(other.connection_id, RemoteMember(other.process))
        first_here = not local
        local[member.connection_id] = member
        self.identities[room_id, member.connection_id] = identity
        if first_here and room_id not in self.subscribers:
            # The room hears its meeting's status, to close when the meeting ends.
            try:
                await self.layer.group_add(status_group(room_id), self.channel)
            except Exception:
                logger.warning("could not join %s; retried on refresh", status_group(room_id), exc_info=True)
                self.resync = True
        return self.participants(member, room_id)

    def participants(self, member: RoomMember, room_id: str) -> list[str]:
        """The connection ids in ``room_id`` other than ``member``, this process's first."""
        others = [*self.rooms.get(room_id, ()), *self.remote.get(room_id, ())]
        return [cid for cid in others if cid != member.connection_id]

    async def announce_join(self, member: RoomMember, room_id: str) -> None:
        text = frame(type="newParticipant", participantConnectionId=member.connection_id)
        await self._to_local(room_id, text, exclude=member)
        self._to_remote(room_id, ("join", room_id, member.connection_id, self.channel))

    async def leave(self, member: RoomMember, room_id: str) -> None:
        local = self.rooms.get(room_id)
        if not local or local.get(member.connection_id) is not member:
            return  # evicted already: whoever replaced it has told the room
        self._drop_local(room_id, member.connection_id)
        try:
            removed = await self.presence.leave(room_id=room_id, connection_id=member.connection_id)
        except Exception:
            logger.warning("presence: could not record %s leaving %s", member.connection_id, room_id, exc_info=True)
            self.resync = True
            removed = True
        if removed:
            await self._announce_left(room_id, member.connection_id)
        await self._forget_room_if_empty(room_id)

    async def relay(self, member: RoomMember, room_id: str, text: str) -> None:
        """Send ``text`` to every other member of ``room_id``, here and on other processes."""
        for peer in tuple(self.rooms.get(room_id, {}).values()):
            if peer is not member:
                await peer.deliver(text)
        if self.remote.get(room_id):
            self._to_remote(room_id, ("msg", room_id, member.connection_id, text))

    def _drop_local(self, room_id: str, connection_id: str) -> RoomMember | None:
        self.identities.pop((room_id, connection_id), None)
        return self.rooms.get(room_id, {}).pop(connection_id, None)

    async def _evict(self, room_id: str, connection_id: str, process: str) -> None:
        member = self._drop_local(room_id, connection_id)
        self.remote.get(room_id, {}).pop(connection_id, None)
        if member is not None:
            await member.evicted(room_id)
        elif process and process != self.channel:
            self.post(process, ("evict", room_id, connection_id))
        await self._announce_left(room_id, connection_id)

    async def _announce_left(self, room_id: str, connection_id: str) -> None:
        self.tombstones[connection_id] = time.monotonic()
        await self._to_local(room_id, frame(type="participantLeft", participantConnectionId=connection_id))
        self._to_remote(room_id, ("left", room_id, connection_id))

    async def _forget_room_if_empty(self, room_id: str) -> None:
        if not self.rooms.get(room_id):
            self.rooms.pop(room_id, None)
            self.remote.pop(room_id, None)
            await self._leave_status_group_if_unused(room_id)

    async def _leave_status_group_if_unused(self, meeting_id: str) -> None:
        if meeting_id in self.rooms or self.subscribers.get(meeting_id):
            return
        try:
            await self.layer.group_discard(status_group(meeting_id), self.channel)
        except Exception:
            logger.warning("could not leave %s", status_group(meeting_id), exc_info=True)
        if meeting_id in self.rooms or self.subscribers.get(meeting_id):  # a join raced the discard
            self.resync = True

    async def close_room(self, room_id: str, *, status: str, reason: str) -> None:
        """The meeting has ended: tell this process's members of ``room_id`` and remove them."""
        local = self.rooms.pop(room_id, None)
        self.remote.pop(room_id, None)
        if not local:
            return
        text = frame(type="roomClosed", roomId=room_id, status=status, reason=reason)
        now = time.monotonic()
        for connection_id, member in local.items():
            self.identities.pop((room_id, connection_id), None)
            self.tombstones[connection_id] = now
            await member.deliver(text)
            await member.room_closed(room_id)
        for connection_id in local:
            try:
                await self.presence.leave(room_id=room_id, connection_id=connection_id)
            except Exception:
                self.resync = True  # the seats expire with the TTL anyway
        await self._leave_status_group_if_unused(room_id)

    async def _to_local(self, room_id: str, text: str, exclude: RoomMember | None = None) -> None:
        for member in tuple(self.rooms.get(room_id, {}).values()):
            if member is not exclude:
                await member.deliver(text)

    def _to_remote(self, room_id: str, item: tuple) -> None:
        for process in {member.process for member in self.remote.get(room_id, {}).values()}:
            self.post(process, item)

    # --- status push ----------------------------------------------------------------------
    async def subscribe(self, member: RoomMember, meeting_id: str) -> None:
        """Deliver ``meeting_id``'s status pushes to ``member``. Redis errors propagate."""
        subscribers = self.subscribers.setdefault(meeting_id, set())
        first = not subscribers and meeting_id not in self.rooms
        subscribers.add(member)
        if first:
            try:
                await self.layer.group_add(status_group(meeting_id), self.channel)
            except Exception:
                # Only this socket is told to retry; any that subscribed meanwhile keep their
                # place, and the next refresh joins the group for them.
                subscribers.discard(member)
                if not subscribers:
                    self.subscribers.pop(meeting_id, None)
                self.resync = True
                raise

    async def unsubscribe(self, member: RoomMember, meeting_id: str) -> None:
        subscribers = self.subscribers.get(meeting_id)
        if subscribers is None:
            return
        subscribers.discard(member)
        if not subscribers:
            del self.subscribers[meeting_id]
            await self._leave_status_group_if_unused(meeting_id)

    # --- other processes ------------------------------------------------------------------
    def post(self, process: str, item: tuple) -> None:
        """Queue ``item`` for ``process``; one flusher per process keeps them in order."""
        box = self.outbox.get(process)
        if box is None:
            self.outbox[process] = [item]
        elif len(box) < OUTBOX_MAX_ITEMS:
            box.append(item)
        else:
            self.outbox_dropped += 1
        if process not in self.flushers:
            self.flushers[process] = asyncio.ensure_future(self._flush(process))

    async def _flush(self, process: str) -> None:
        try:
            while box := self.outbox.pop(process, None):
                if len(box) > BATCH_MAX_ITEMS:
                    self.outbox[process] = box[BATCH_MAX_ITEMS:] + self.outbox.get(process, [])
                    box = box[:BATCH_MAX_ITEMS]
                if not await self._send_batch(process, box):
                    stale = self.outbox.pop(process, [])
                    logger.error(
                        "Redis unreachable for %.0fs: dropped %d items for %s (%d more over the queue limit)",
                        OUTBOX_RETRY_SECONDS,
                        len(box) + len(stale),
                        process,
                        self.outbox_dropped,
                    )
                    self.outbox_dropped = 0
        finally:
            self.flushers.pop(process, None)

    async def _send_batch(self, process: str, items: list) -> bool:
        """Send, retrying while Redis is unreachable; False when it stayed so past the deadline."""
        deadline = time.monotonic() + OUTBOX_RETRY_SECONDS
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            try:
                await self.layer.send(process, {"type": "signalling.batch", "items": items})
                return True
            except ChannelFull:
                logger.warning("process channel %s is full (gone?): dropped %d items", process, len(items))
                return True
            except Exception:
                self.resync = True
                if time.monotonic() > deadline:
                    logger.debug("last send error for %s", process, exc_info=True)
                    return False
                await asyncio.sleep(backoff.next())

    async def _receive_loop(self) -> None:
        # No jitter, here or in _send_batch: a handful of web processes reconnecting to one
        # Redis is no thundering herd, and steady delays are easier to read in a log.
        backoff = Backoff(base=0.05, cap=2.0)
        while not self.stopping:
            try:
                message = await self.layer.receive(self.channel)
                backoff.reset()
            except Exception:
                delay = backoff.next()
                logger.warning("channel layer receive failed; retrying in %.2fs", delay, exc_info=True)
                self.resync = True
                await asyncio.sleep(delay)
                continue
            try:
                if message["type"] == "signalling.batch":
                    await self._handle_batch(message["items"])
                elif message["type"] == "status.push":
                    await self._push_status(message)
            except Exception:
                logger.exception("could not handle %s", message.get("type"))

    async def _handle_batch(self, items: list) -> None:
        for item in items:
            kind, room_id, connection_id = item[0], item[1], item[2]
            if kind == "msg":
                if room_id in self.rooms:
                    await self._to_local(room_id, item[3])
            elif kind == "join":
                remote = self.remote.get(room_id)
                if remote is not None and connection_id not in remote:
                    remote[connection_id] = RemoteMember(item[3])
                    await self._to_local(room_id, frame(type="newParticipant", participantConnectionId=connection_id))
            elif kind == "left":
                self.tombstones[connection_id] = time.monotonic()
                if self.remote.get(room_id, {}).pop(connection_id, None):
                    await self._to_local(room_id, frame(type="participantLeft", participantConnectionId=connection_id))
            elif kind == "evict":
                member = self._drop_local(room_id, connection_id)
                if member is not None:
                    self.tombstones[connection_id] = time.monotonic()
                    await member.evicted(room_id)
                    await self._to_local(room_id, frame(type="participantLeft", participantConnectionId=connection_id))
                    try:  # in case a refresh put it back before this arrived
                        await self.presence.leave(room_id=room_id, connection_id=connection_id)
                    except Exception:
                        self.resync = True
                    await self._forget_room_if_empty(room_id)

    async def _push_status(self, message: dict) -> None:
        text = frame(**{key: value for key, value in message.items() if key != "type"}, type="status")
        for member in tuple(self.subscribers.get(message["meetingId"], ())):
            await member.deliver(text)
        if message.get("terminal"):
            await self.close_room(message["meetingId"], status=message["status"], reason=message.get("reason", ""))

    # --- presence refresh -----------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.refresh()
            except Exception:
                logger.warning("presence refresh failed", exc_info=True)
                self.resync = True

    async def refresh(self) -> None:
        rooms = {
            room_id: [(cid, f"{self.identities[room_id, cid]}|{self.channel}") for cid in local]
            for room_id, local in self.rooms.items()
            if local
        }
        if rooms:
            live = await self.presence.refresh(rooms, ttl=self.ttl)
            for room_id, members in live.items():
                await self._reconcile(room_id, members)
        now = time.monotonic()
        if (self.subscribers or self.rooms) and (
            self.resync or now - self.status_groups_at > STATUS_GROUP_REFRESH_SECONDS
        ):
            for meeting_id in {*self.subscribers, *self.rooms}:
                await self.layer.group_add(status_group(meeting_id), self.channel)
            self.status_groups_at = now
        self.resync = False
        self.tombstones = {cid: at for cid, at in self.tombstones.items() if now - at < 10 * self.ttl}

    async def _reconcile(self, room_id: str, members) -> None:
        local = self.rooms.get(room_id)
        if not local:
            return
        remote = self.remote.setdefault(room_id, {})
        live = set()
        for member in members:
            live.add(member.connection_id)
            if member.connection_id in local or member.process == self.channel:
                continue
            known = remote.get(member.connection_id)
            if known is not None:
                known.misses = 0
            elif member.connection_id not in self.tombstones:
                remote[member.connection_id] = RemoteMember(member.process)
                await self._to_local(
                    room_id, frame(type="newParticipant", participantConnectionId=member.connection_id)
                )
        for connection_id, member in list(remote.items()):
            if connection_id in live:
                continue
            member.misses += 1
            if member.misses >= MISSES_BEFORE_GONE:
                del remote[connection_id]
                self.tombstones[connection_id] = time.monotonic()
                await self._to_local(room_id, frame(type="participantLeft", participantConnectionId=connection_id))


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


async def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(get_channel_layer())
    await hub.ready
    return hub


async def stop_hub() -> None:
    """Stop this loop's hub (tests; a server just exits)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.stop()
