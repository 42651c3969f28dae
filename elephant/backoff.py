"""Exponential backoff with jitter: the one formula every retry in Elephant uses.

AWS calls retry inside botocore (``elephant.aws``); what outlasts that goes back to Celery,
whose countdown, like the mirror's per-meeting schedule and the signalling hub's reconnects
to Redis, is ``backoff_delay``. Nothing else sleeps and retries by hand.
"""

import random


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float = 1.0) -> float:
    """The delay before retry number ``attempt`` (0 for the first retry).

    ``min(cap, base * 2**attempt)``, of which the last ``jitter`` fraction is random: 1.0 is
    AWS's "full jitter" (uniform in [0, ceiling]), 0.5 keeps at least half, 0 none.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt))
    return ceiling * (1 - jitter * random.random())


class Backoff:
    """Successive delays for a loop that waits on a service coming back (an asyncio task).

    ``next()`` gives the next delay and doubles the one after; ``reset()`` after a success.
    """

    def __init__(self, *, base: float, cap: float, jitter: float = 0.0):
        self.base, self.cap, self.jitter = base, cap, jitter
        self.attempt = 0

    def next(self) -> float:
        delay = backoff_delay(self.attempt, base=self.base, cap=self.cap, jitter=self.jitter)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
