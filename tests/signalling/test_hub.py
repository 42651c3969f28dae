"""The hub through its interface alone: members that are not consumers (``RoomMember``)."""

import secrets

from signalling.hub import RoomMember, get_hub


class Member:
    """A ``RoomMember`` that records what the hub did with it."""

    def __init__(self):
        self.connection_id = secrets.token_urlsafe(12)
        self.received: list[str] = []
        self.evictions: list[str] = []

    async def deliver(self, text: str) -> None:
        self.received.append(text)

    async def evicted(self, room_id: str) -> None:
        self.evictions.append(room_id)


def room() -> str:
    return secrets.token_hex(8)


async def seated(hub, room_id: str) -> list[str]:
    """The room's members in Redis, by connection id (presence keeps no order)."""
    return sorted(m.connection_id for m in await hub.presence.members(room_id))


async def test_relay_reaches_every_other_member_never_the_sender():
    hub = await get_hub()
    room_id = room()
    a, b, c = Member(), Member(), Member()
    assert await hub.join(a, room_id, "teacher") == []
    assert await hub.join(b, room_id, "student") == [a.connection_id]
    assert await hub.join(c, room_id, "staff:1") == [a.connection_id, b.connection_id]
    assert hub.participants(b, room_id) == [a.connection_id, c.connection_id]
    await hub.relay(a, room_id, "offer")
    assert (a.received, b.received, c.received) == ([], ["offer"], ["offer"])
    await hub.leave(c, room_id)
    assert b.received[-1] == f'{{"type":"participantLeft","participantConnectionId":"{c.connection_id}"}}'
    await hub.relay(a, room_id, "again")
    assert c.received == ["offer"]


async def test_the_same_identity_again_evicts_the_older_member():
    hub = await get_hub()
    room_id = room()
    teacher, student, again = Member(), Member(), Member()
    await hub.join(teacher, room_id, "teacher")
    await hub.join(student, room_id, "student")
    assert await hub.join(again, room_id, "student") == [teacher.connection_id]
    assert student.evictions == [room_id]
    assert await seated(hub, room_id) == sorted([teacher.connection_id, again.connection_id])
    await hub.leave(student, room_id)  # an evicted member's late leave changes nothing
    assert await seated(hub, room_id) == sorted([teacher.connection_id, again.connection_id])


async def test_the_refresh_keeps_each_members_identity():
    hub = await get_hub()
    room_id = room()
    member: RoomMember = Member()
    await hub.join(member, room_id, "staff:7")
    await hub.refresh()
    [entry] = await hub.presence.members(room_id)
    assert (entry.connection_id, entry.identity, entry.process) == (member.connection_id, "staff:7", hub.channel)
    await hub.leave(member, room_id)
    assert await hub.presence.members(room_id) == []
    assert not hub.identities
