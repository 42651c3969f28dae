import time


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
