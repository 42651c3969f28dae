"""Scenarios for the fleet simulator (bench/fleet_sim.py): the JSON file, the sessions it implies, the summary.

A scenario file (extra keys allowed; every key below understood, defaults in ``DEFAULTS``):

    {"seed": 7, "days": 7, "sessions_per_day": 800, "start_minutes": [0, 30],
     "hour_weights": {"15": 1, "16": 3, "17": 3, "18": 1}, "duration_minutes": 60,
     "booking_lead_hours": {"lognormal": {"median": 48, "p95": 300}},
     "no_show_rate": 0.05,
     "boot_seconds": {"cold": {"lognormal": {"median": 420, "p95": 1100}},
                      "warm": {"lognormal": {"median": 75, "p95": 150}}},
     "capacity": {"ice_probability": 0.02},
     "limits": {"run_instances_burst": 1000, "run_instances_per_second": 2, "vcpu_quota": 2000},
     "instance": {"type": "g4dn.xlarge", "vcpus": 4, "usd_per_hour": 0.71, "stopped_usd_per_hour": 0.01}}

Also understood: ``limits.start_instances_burst`` / ``start_instances_per_second`` (StartInstances' own
bucket; default 1000 and 2), ``instance.fallback_types`` (tried on capacity errors) and ``instance.os``
(``windows``, the default, or ``linux``: the prior a new image starts from).

A distribution is ``{"lognormal": {"median": m, "p95": p}}``, ``{"fixed": x}`` or
``{"uniform": [low, high]}``. Sessions are drawn from ``seed`` alone, so every policy of one run
meets exactly the same week.
"""

import json
import math
import random
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULTS = {
    "seed": 7,
    "days": 7,
    "sessions_per_day": 100,
    "start_minutes": [0, 30],
    "hour_weights": {"16": 1},
    "duration_minutes": 60,
    "booking_lead_hours": {"lognormal": {"median": 48, "p95": 300}},
    "no_show_rate": 0.05,
    "boot_seconds": {
        "cold": {"lognormal": {"median": 420, "p95": 1100}},
        "warm": {"lognormal": {"median": 75, "p95": 150}},
    },
    "capacity": {"ice_probability": 0.0},
    "limits": {
        "run_instances_burst": 1000,
        "run_instances_per_second": 2,
        "start_instances_burst": 1000,
        "start_instances_per_second": 2,
        "vcpu_quota": 100_000,
    },
    "instance": {
        "type": "g4dn.xlarge",
        "vcpus": 4,
        "usd_per_hour": 0.71,
        "stopped_usd_per_hour": 0.01,
        "os": "windows",
    },
}
# The simulated week starts on a Monday at midnight UTC.
EPOCH = datetime(2027, 3, 1, tzinfo=UTC)
NORMAL_P95 = 1.6448536269514722


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Distribution:
    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec, *, where: str) -> "Distribution":
        if isinstance(spec, int | float):
            return cls("fixed", float(spec))
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ScenarioError(
                f"{where}: a distribution is {{'lognormal': {{...}}}}, {{'fixed': x}} or {{'uniform': [a, b]}}"
            )
        ((kind, value),) = spec.items()
        if kind == "lognormal":
            median, p95 = float(value["median"]), float(value["p95"])
            if not 0 < median <= p95:
                raise ScenarioError(f"{where}: a lognormal needs 0 < median <= p95")
            return cls("lognormal", math.log(median), math.log(p95 / median) / NORMAL_P95)
        if kind == "fixed":
            return cls("fixed", float(value))
        if kind == "uniform":
            low, high = (float(v) for v in value)
            return cls("uniform", low, high)
        raise ScenarioError(f"{where}: unknown distribution {kind!r}")

    def draw(self, rng: random.Random) -> float:
        if self.kind == "lognormal":
            return math.exp(rng.gauss(self.a, self.b))
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a

    @property
    def median(self) -> float:
        return {"lognormal": math.exp(self.a), "uniform": (self.a + self.b) / 2}.get(self.kind, self.a)

    def quantile(self, q: float) -> float:
        if self.kind == "lognormal":
            return math.exp(self.a + self.b * statistics.NormalDist().inv_cdf(q))
        if self.kind == "uniform":
            return self.a + q * (self.b - self.a)
        return self.a


@dataclass(frozen=True)
class Scenario:
    name: str
    raw: dict
    seed: int
    days: int
    sessions_per_day: int
    start_minutes: tuple[int, ...]
    hour_weights: dict[int, float]
    duration_minutes: int
    booking_lead_hours: Distribution
    no_show_rate: float
    cold_boot: Distribution
    warm_boot: Distribution
    ice_probability: float
    run_instances_burst: float
    run_instances_per_second: float
    start_instances_burst: float
    start_instances_per_second: float
    vcpu_quota: int
    instance_type: str
    vcpus: int
    usd_per_hour: float
    stopped_usd_per_hour: float
    os: str  # the desktop profile's OS ("windows" or "linux"): which boot prior a new image starts from

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"{path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ScenarioError(f"{path}: a scenario is a JSON object")
        return cls.from_dict(raw, name=Path(path).stem)

    @classmethod
    def from_dict(cls, raw: dict, *, name: str = "scenario") -> "Scenario":
        """The scenario ``raw`` describes, or ``ScenarioError`` naming the key that is wrong and why."""

        def pick(key, sub=None, convert=float, low=None, high=None):
            where = f"{key}.{sub}" if sub else key
            value = raw.get(key, DEFAULTS[key])
            if sub is not None:
                if not isinstance(value, dict):
                    raise ScenarioError(f"{where}: {key} is an object")
                value = value.get(sub, DEFAULTS[key][sub])
            if convert is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            if convert is str:
                if not isinstance(value, str) or not value:
                    raise ScenarioError(f"{where}: a string, not {value!r}")
                return value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ScenarioError(f"{where}: a number, not {value!r}")
            if convert is int and not isinstance(value, int):
                raise ScenarioError(f"{where}: a whole number, not {value!r}")
            value = convert(value)
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
                raise ScenarioError(f"{where}: {bounds}, not {value!r}")
            return value

        def distribution(spec, where, low=0.0):
            try:
                parsed = Distribution.parse(spec, where=where)
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, ScenarioError):
                    raise
                raise ScenarioError(f"{where}: {exc!r}") from exc
            negative = parsed.kind in ("fixed", "uniform") and parsed.a < low
            if negative or (parsed.kind == "uniform" and parsed.b < parsed.a):
                raise ScenarioError(f"{where}: values from {low:g} up (a uniform is [low, high])")
            return parsed

        hour_weights = raw.get("hour_weights", DEFAULTS["hour_weights"])
        try:
            weights = {int(h): float(w) for h, w in hour_weights.items() if float(w) > 0}
        except (AttributeError, TypeError, ValueError) as exc:
            raise ScenarioError(f'hour_weights: an object of hour -> weight, as {{"16": 3}} ({exc})') from exc
        if not weights or any(not 0 <= h < 24 for h in weights):
            raise ScenarioError("hour_weights: hours 0-23 with positive weights")
        start_minutes = raw.get("start_minutes", DEFAULTS["start_minutes"])
        if (
            not isinstance(start_minutes, list)
            or not start_minutes
            or any(isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < 60 for m in start_minutes)
        ):
            raise ScenarioError(f"start_minutes: a list of minutes 0-59, not {start_minutes!r}")
        boot = raw.get("boot_seconds", DEFAULTS["boot_seconds"])
        if not isinstance(boot, dict):
            raise ScenarioError("boot_seconds: an object with cold and warm distributions")
        os_name = pick("instance", "os", convert=str)
        if os_name not in ("windows", "linux"):
            raise ScenarioError(f"instance.os: windows or linux, not {os_name!r}")
        return cls(
            name=name,
            raw=raw,
            seed=pick("seed", convert=int),
            days=pick("days", convert=int, low=1),
            sessions_per_day=pick("sessions_per_day", convert=int, low=1),
            start_minutes=tuple(start_minutes),
            hour_weights=weights,
            duration_minutes=pick("duration_minutes", convert=int, low=1),
            booking_lead_hours=distribution(
                raw.get("booking_lead_hours", DEFAULTS["booking_lead_hours"]), "booking_lead_hours"
            ),
            no_show_rate=pick("no_show_rate", low=0, high=1),
            cold_boot=distribution(boot.get("cold", DEFAULTS["boot_seconds"]["cold"]), "boot_seconds.cold"),
            warm_boot=distribution(boot.get("warm", DEFAULTS["boot_seconds"]["warm"]), "boot_seconds.warm"),
            ice_probability=pick("capacity", "ice_probability", low=0, high=1),
            run_instances_burst=pick("limits", "run_instances_burst", low=1),
            run_instances_per_second=pick("limits", "run_instances_per_second", low=0.001),
            start_instances_burst=pick("limits", "start_instances_burst", low=1),
            start_instances_per_second=pick("limits", "start_instances_per_second", low=0.001),
            vcpu_quota=pick("limits", "vcpu_quota", convert=int, low=1),
            instance_type=pick("instance", "type", convert=str),
            vcpus=pick("instance", "vcpus", convert=int, low=1),
            usd_per_hour=pick("instance", "usd_per_hour", low=0.0001),
            stopped_usd_per_hour=pick("instance", "stopped_usd_per_hour", low=0),
            os=os_name,
        )


@dataclass(frozen=True)
class Session:
    key: int
    booked_at: datetime
    meet_time: datetime
    duration_minutes: int
    no_show: bool


def sessions(scenario: Scenario) -> list[Session]:
    """Every session of the scenario, sorted by booking time (deterministic in ``seed``)."""
    rng = random.Random(scenario.seed)
    hours, weights = zip(*sorted(scenario.hour_weights.items()), strict=True)
    drawn = []
    for day in range(scenario.days):
        for _ in range(scenario.sessions_per_day):
            hour = rng.choices(hours, weights)[0]
            minute = rng.choice(scenario.start_minutes)
            meet_time = EPOCH + timedelta(days=day, hours=hour, minutes=minute)
            lead = timedelta(hours=scenario.booking_lead_hours.draw(rng))
            # Nobody books in the last ten minutes, nor before the simulated week (they are there at its start).
            booked_at = max(EPOCH - timedelta(hours=1), meet_time - max(lead, timedelta(minutes=10)))
            drawn.append((booked_at, meet_time, rng.random() < scenario.no_show_rate))
    drawn.sort()
    return [
        Session(key=i, booked_at=b, meet_time=m, duration_minutes=scenario.duration_minutes, no_show=n)
        for i, (b, m, n) in enumerate(drawn)
    ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]
