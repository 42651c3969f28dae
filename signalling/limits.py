import asyncio
import time
import weakref


class TokenBucket:
    """``burst`` frames at once, refilled at ``rate`` frames per second."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, *, rate: float, burst: int):
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SocketCounts:
    """Open sockets of this process, in all and per client address (the caps on connect)."""

    def __init__(self):
        self.total = 0
        self.by_address: dict[str, int] = {}

    def claim(self, address: str | None, *, per_process: int, per_address: int) -> bool:
        """Count one more socket from ``address`` (None: unknown, only the process cap), or False when over a cap."""
        if self.total >= per_process:
            return False
        if address is not None:
            count = self.by_address.get(address, 0)
            if count >= per_address:
                return False
            self.by_address[address] = count + 1
        self.total += 1
        return True

    def release(self, address: str | None) -> None:
        self.total -= 1
        if address is not None:
            count = self.by_address.pop(address, 1) - 1
            if count > 0:
                self.by_address[address] = count


_counts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketCounts]" = weakref.WeakKeyDictionary()


def socket_counts() -> SocketCounts:
    """This process's counts (one per event loop, as the hub: every test gets its own)."""
    loop = asyncio.get_running_loop()
    counts = _counts.get(loop)
    if counts is None:
        counts = _counts[loop] = SocketCounts()
    return counts
