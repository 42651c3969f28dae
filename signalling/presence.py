"""Room membership in Redis, shared by every web process.

Per room, a sorted set ``{prefix}:sig:room:{room_id}`` scores each connection id with the
moment its entry expires (Redis server time, milliseconds), and a hash
``{prefix}:sig:room:{room_id}:m`` holds ``identity|process_channel`` for each. The process
that holds a connection refreshes it every ``ttl / 3``; a process that dies stops
refreshing, and its members fall out within ``ttl``. Both keys expire on their own when
every process of a room is gone. The scripts run atomically, so capacity and
"one connection per participant" hold across processes.
"""

from dataclasses import dataclass

# KEYS: zset, hash. ARGV: conn_id, identity, process, ttl_ms, capacity.
# Returns {ok, expired, replaced, others}; each list is flat [conn, info, conn, info, ...].
_JOIN = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[4])
local expired = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  table.insert(expired, m)
  table.insert(expired, redis.call('HGET', KEYS[2], m) or '')
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local replaced, others = {}, {}
local prefix = ARGV[2] .. '|'
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= ARGV[1] then
    local info = redis.call('HGET', KEYS[2], m) or ''
    if string.sub(info, 1, #prefix) == prefix then
      table.insert(replaced, m)
      table.insert(replaced, info)
    else
      table.insert(others, m)
      table.insert(others, info)
    end
  end
end
if #others / 2 >= tonumber(ARGV[5]) then
  return {0, expired, {}, others}
end
for i = 1, #replaced, 2 do
  redis.call('ZREM', KEYS[1], replaced[i])
  redis.call('HDEL', KEYS[2], replaced[i])
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return {1, expired, replaced, others}
"""

# KEYS: zset, hash. ARGV: ttl_ms, then conn_id, info pairs of this process's members.
# Refreshes them, drops expired entries, returns every live member: [conn, info, ...].
# With no pairs it only reads (and prunes).
_REFRESH = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
if #ARGV > 1 then
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  redis.call('PEXPIRE', KEYS[2], ttl * 2)
end
local live = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(live, m)
  table.insert(live, redis.call('HGET', KEYS[2], m) or '')
end
return live
"""

# KEYS: zset, hash. ARGV: conn_id. Returns 1 when this call removed the member.
_LEAVE = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


@dataclass(frozen=True)
class Member:
    connection_id: str
    identity: str
    process: str


@dataclass(frozen=True)
class JoinResult:
    admitted: bool
    replaced: list[Member]
    others: list[Member]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _members(flat) -> list[Member]:
    members = []
    for i in range(0, len(flat), 2):
        identity, _, process = _text(flat[i + 1]).partition("|")
        members.append(Member(_text(flat[i]), identity, process))
    return members


class Presence:
    """The scripts above, bound to one Redis client (the channel layer's pool for this loop)."""

    def __init__(self, redis, prefix: str):
        self.redis = redis
        self.prefix = f"{prefix}:sig:room:"
        self._join = redis.register_script(_JOIN)
        self._refresh = redis.register_script(_REFRESH)
        self._leave = redis.register_script(_LEAVE)

    def _keys(self, room_id: str) -> list[str]:
        key = self.prefix + room_id
        return [key, key + ":m"]

    async def join(
        self, *, room_id: str, connection_id: str, identity: str, process: str, ttl: float, capacity: int
    ) -> JoinResult:
        admitted, _expired, replaced, others = await self._join(
            keys=self._keys(room_id), args=[connection_id, identity, process, int(ttl * 1000), capacity]
        )
        return JoinResult(bool(admitted), _members(replaced), _members(others))

    async def leave(self, *, room_id: str, connection_id: str) -> bool:
        return bool(await self._leave(keys=self._keys(room_id), args=[connection_id]))

    async def refresh(self, rooms: dict[str, list[tuple[str, str]]], *, ttl: float) -> dict[str, list[Member]]:
        """Refresh this process's members of every room in one round trip; return who is live."""
        pipe = self.redis.pipeline(transaction=False)
        for room_id, entries in rooms.items():
            args = [int(ttl * 1000)]
            for connection_id, info in entries:
                args += [connection_id, info]
            await self._refresh(keys=self._keys(room_id), args=args, client=pipe)
        results = await pipe.execute()
        return {room_id: _members(flat) for room_id, flat in zip(rooms, results, strict=True)}

    async def members(self, room_id: str) -> list[Member]:
        return _members(await self._refresh(keys=self._keys(room_id), args=[0]))
