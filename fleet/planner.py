"""The launch planner: when to launch each meeting's hosts so the account's limits are never hit (issue 11).

Pure: the caller hands in what must launch (``Demand``) and the limits (``Limits``), and gets a
launch time per meeting, or a refusal.

- Each meeting has a latest launch moment (``deadline`` = meet_time - its learned lead) and an
  earliest one (``earliest``: now, or meet_time - the longest lead we accept). Its hosts run from
  their launch to ``end`` (the hard stop).
- Time is cut into slots (60 s). RunInstances (and StartInstances) share a token bucket per
  account and region (EC2 API throttling: a burst, then a steady refill). The planner never plans
  to spend the burst: it spreads launches at ``launches_per_slot`` (the refill rate times the slot,
  times a share), so the burst stays free for what cannot be planned (replacements, late
  bookings, staff's "launch now"), and a crowded hour is launched earlier instead of throttled late.
- Running vCPUs per instance family stay within the quota at every slot (Service Quotas
  "Running On-Demand G and VT instances" and friends count vCPUs, not instances); ``occupied``
  carries the vCPUs of hosts already running.
- Greedy, backwards from the latest deadline: every meeting is placed in the latest slot at or
  before its deadline that has room in both, which keeps hosts off the bill as long as possible.
  A meeting with no room back to its ``earliest`` is refused.
"""

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

SLOT = timedelta(seconds=60)
# UTC, the zone of the database's datetimes: the difference of two datetimes of one zone needs no offset
# lookups (half the time; the plan takes millions a day). Every zone's offset is whole minutes, so the
# slots are the same minutes whatever the machine's zone.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


RUN = "run"  # RunInstances: a cold launch
START = "start"  # StartInstances: a warm-pool instance

# Service Quotas' running On-Demand vCPU quotas, by the instance family's letters.
_QUOTA_FAMILIES = {"g": "g", "vt": "g", "p": "p", "f": "f", "x": "x", "inf": "inf", "trn": "trn", "dl": "dl"}
_SIZE_VCPUS = {"nano": 2, "micro": 2, "small": 2, "medium": 2, "large": 2, "xlarge": 4}
_SIZE = re.compile(r"(\d+)xlarge")


def quota_family(instance_type: str) -> str:
    """The vCPU quota an instance type counts against: "g" (Running On-Demand G and VT instances, L-DB2E81BA),
    "p", "f", "x", "inf", "trn", "dl", else "standard" (A, C, D, H, I, M, R, T, Z; L-1216C47A)."""
    family = instance_type.split(".", 1)[0].lower()
    letters = re.match(r"[a-z]+", family)
    prefix = letters.group(0) if letters else family
    for length in (3, 2, 1):
        if prefix[:length] in _QUOTA_FAMILIES:
            return _QUOTA_FAMILIES[prefix[:length]]
    return "standard"


def vcpus_of(instance_type: str) -> int:
    """vCPUs of an instance type from its size (xlarge 4, 2xlarge 8, ...; EC2's sizes, metal taken as 96)."""
    size = instance_type.split(".", 1)[-1].lower()
    if size in _SIZE_VCPUS:
        return _SIZE_VCPUS[size]
    if match := _SIZE.fullmatch(size):
        return 4 * int(match.group(1))
    return 96


class Demand(NamedTuple):
    """One meeting's launch as the plan sees it (a tuple: the plan makes hundreds each minute)."""

    key: str  # the meeting id
    deadline: datetime  # launch no later than this
    earliest: datetime  # and no earlier than this
    end: datetime  # its hosts run until then
    instances: int = 2
    vcpus_per_instance: int = 4
    family: str = "g"
    bucket: str = RUN  # which EC2 bucket the launch draws from: RunInstances or StartInstances


@dataclass(frozen=True)
class Limits:
    launches_per_slot: int  # RunInstances instances the plan may use per slot
    vcpu_quota: Mapping[str, int] = field(default_factory=dict)  # family -> running vCPUs; absent = unlimited
    starts_per_slot: int | None = None  # StartInstances instances per slot (its own bucket); None: as RunInstances

    @classmethod
    def from_bucket(
        cls,
        *,
        refill_per_second: float,
        share: float,
        vcpu_quota: Mapping[str, int],
        start_refill_per_second: float | None = None,
    ) -> "Limits":
        def per_slot(rate: float) -> int:
            return max(1, math.floor(rate * SLOT.total_seconds() * share))

        starts = per_slot(start_refill_per_second) if start_refill_per_second is not None else None
        return cls(launches_per_slot=per_slot(refill_per_second), vcpu_quota=dict(vcpu_quota), starts_per_slot=starts)

    def per_slot(self, bucket: str) -> int:
        if bucket == START and self.starts_per_slot is not None:
            return self.starts_per_slot
        return self.launches_per_slot


@dataclass
class Plan:
    launch_at: dict[str, datetime] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def slot_of(moment: datetime) -> int:
    return (moment - EPOCH) // SLOT  # floor division of whole microseconds: an int, no float rounding


def slot_start(slot: int) -> datetime:
    return EPOCH + slot * SLOT


@dataclass(frozen=True)
class Occupancy:
    """vCPUs already running: ``runs`` of (family, vCPUs, first slot, last slot), each held over its
    slots. ``occupancy[(family, slot)]`` is the total at one slot."""

    runs: tuple[tuple[str, int, int, int], ...] = ()

    def __getitem__(self, key: tuple[str, int]) -> int:
        family, slot = key
        return sum(v for f, v, first, last in self.runs if f == family and first <= slot <= last)


class _Ledger:
    """Launches per bucket and slot, and running vCPUs per family and slot, as the plan fills them.

    The vCPUs of a family are a list over the slots the plan touches, so a fit is one ``max``
    over a slice and a take one slice assignment (each demand spans a hundred-odd slots, and a
    busy hour plans thousands of demands). A family whose quota holds everything already running
    plus every demand of the plan at once needs no per-slot count at all.
    """

    def __init__(self, limits: Limits, occupied: Occupancy, first: int, last: int, demands: list[Demand]):
        self.limits = limits
        self.launches: dict[tuple[str, int], int] = defaultdict(int)
        self.base = first
        width = last - first + 1
        need: dict[str, int] = defaultdict(int)
        for demand in demands:
            need[demand.family] += demand.instances * demand.vcpus_per_instance
        self.vcpus: dict[str, list[int]] = {}
        for family, quota in limits.vcpu_quota.items():
            # The running vCPUs over the plan's slots: a difference array, then its running sum.
            delta = [0] * (width + 1)
            for run_family, count, run_first, run_last in occupied.runs:
                if run_family == family and run_last >= first and run_first <= last:
                    delta[max(run_first, first) - first] += count
                    delta[min(run_last, last) - first + 1] -= count
            row = list(itertools.accumulate(delta[:width]))
            if max(row, default=0) + need.get(family, 0) > quota:
                self.vcpus[family] = row

    def launch_fits(self, demand: Demand, slot: int) -> bool:
        return self.launches[(demand.bucket, slot)] + demand.instances <= self.limits.per_slot(demand.bucket)

    def vcpus_fit(self, demand: Demand, slot: int, last: int) -> bool:
        row = self.vcpus.get(demand.family)
        if row is None:
            return True
        need = demand.instances * demand.vcpus_per_instance
        return max(row[slot - self.base : last - self.base + 1]) + need <= self.limits.vcpu_quota[demand.family]

    def take(self, demand: Demand, slot: int, last: int) -> None:
        self.launches[(demand.bucket, slot)] += demand.instances
        row = self.vcpus.get(demand.family)
        if row is not None:
            need = demand.instances * demand.vcpus_per_instance
            a, b = slot - self.base, last - self.base + 1
            row[a:b] = [count + need for count in row[a:b]]


def plan_launches(demands: Iterable[Demand], limits: Limits, *, occupied: Occupancy | None = None) -> Plan:
    """A launch time (the start of a slot) for each demand, latest first; refusals listed.

    A demand moves earlier only for room in its bucket: launching earlier never frees vCPUs (its
    hosts would run over every slot they ran over before, and more), so a demand that does not fit
    the quota at its deadline's slot is refused at once.
    """
    plan = Plan()
    demands = sorted(demands, key=lambda d: (d.deadline, d.key), reverse=True)
    if not demands:
        return plan
    # Each demand's slots, worked out once: (earliest, last running, deadline).
    slots = [(slot_of(d.earliest), slot_of(d.end), slot_of(d.deadline)) for d in demands]
    ledger = _Ledger(
        limits,
        occupied or Occupancy(),
        min(first for first, _, _ in slots),
        max(max(last_run, deadline) for _, last_run, deadline in slots),
        demands,
    )
    for demand, (first, last_run, slot) in zip(demands, slots, strict=True):
        while slot >= first and not ledger.launch_fits(demand, slot):
            slot -= 1
        if slot < first or not ledger.vcpus_fit(demand, slot, last_run):
            plan.refused.append(demand.key)
            continue
        ledger.take(demand, slot, last_run)
        plan.launch_at[demand.key] = max(slot_start(slot), demand.earliest)
    return plan


def vcpus_running(hosts: Iterable[tuple[str, int, datetime, datetime]]) -> Occupancy:
    """``occupied`` for ``plan_launches`` from running hosts: (family, vcpus, from, until) each."""
    return Occupancy(tuple((family, vcpus, slot_of(start), slot_of(until)) for family, vcpus, start, until in hosts))
