"""How long a desktop takes from launch to ready, learned from the fleet's own history (issue 11).

Pure functions: the caller reads the history and hands in ``BootSample`` values.

- A boot time is modelled as log-normal. The fit is a weighted maximum-likelihood estimate with
  right-censoring (EM for a censored normal on log seconds): a host that never became ready is
  not dropped but counts as "took longer than ``seconds``", so a bad AMI or a hard hour pushes
  the estimate up instead of vanishing from it.
- Recent boots weigh more: a sample ``age_days`` old weighs ``0.5 ** (age_days / half_life_days)``.
- A new (AMI, type, AZ, start) key starts from a configured prior, which counts as ``prior.weight``
  pseudo-samples; as real samples accumulate they outweigh it.
- The tail is held to what was seen: a log-normal fitted to the whole history can bend below its far
  end (a warm start of 75 s plus the sweeps' 15-second steps is not log-normal: the fit's 99.5th
  percentile came out at 232 s where 8 of 1,600 boots took 255 s or more). Where a key has
  ``TAIL_MIN_SAMPLES`` uncensored boots, ``tail_held`` widens the spread until the fitted
  ``TAIL_QUANTILE`` is at least the observed one (never narrower than the fit).
- ``launch_lead`` is the smallest lead L such that every host of a meeting is ready by
  ``meet_time`` with probability at least ``target`` (hosts independent: the product of their CDFs);
  the caller plans for ``plan_target``, the promised target with a margin of its misses in reserve.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

_STANDARD = NormalDist()
# A fitted spread never collapses below this (a handful of identical boots is not certainty).
MIN_SIGMA = 0.05
EM_ROUNDS = 60
# The observed quantile the fit's tail is held to (``tail_held``), and the uncensored boots it needs
# before it says anything (a hundred boots put one above their 99th percentile).
TAIL_QUANTILE = 0.99
TAIL_MIN_SAMPLES = 100


@dataclass(frozen=True)
class BootSample:
    seconds: float  # launch -> ready; for a censored sample, launch -> when it was given up
    censored: bool = False  # never became ready: its boot took longer than ``seconds``
    age_days: float = 0.0  # how long ago it booted (the recency weight)


@dataclass(frozen=True)
class LogNormal:
    """A log-normal boot-time distribution in seconds: log(seconds) ~ Normal(mu, sigma)."""

    mu: float
    sigma: float

    @classmethod
    def from_median_p95(cls, median: float, p95: float) -> "LogNormal":
        if not 0 < median <= p95:
            raise ValueError(f"a log-normal needs 0 < median <= p95 (got median {median}, p95 {p95})")
        return cls(mu=math.log(median), sigma=max(MIN_SIGMA, math.log(p95 / median) / _STANDARD.inv_cdf(0.95)))

    @property
    def median(self) -> float:
        return math.exp(self.mu)

    def cdf(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        return NormalDist(self.mu, self.sigma).cdf(math.log(seconds))

    def quantile(self, q: float) -> float:
        if not 0 < q < 1:
            raise ValueError(f"a quantile needs 0 < q < 1 (got {q})")
        return math.exp(NormalDist(self.mu, self.sigma).inv_cdf(q))


@dataclass(frozen=True)
class Prior:
    """What a key starts from before it has history: a distribution worth ``weight`` samples."""

    distribution: LogNormal
    weight: float = 5.0


def recency_weight(age_days: float, *, half_life_days: float) -> float:
    return 0.5 ** (max(0.0, age_days) / half_life_days)


@dataclass
class BootStats:
    """What a fit needs of a key's boots: the recency-weighted sums of the uncensored log seconds (sum of
    weights, of weight * y, of weight * y squared) and each censored boot as (log seconds, weight). A
    database can add these up itself (``fleet.services.planning``), so a month of boots is one row."""

    known_weight: float = 0.0
    known_y: float = 0.0
    known_y2: float = 0.0
    censored: list[tuple[float, float]] = field(default_factory=list)

    def add(self, sample: BootSample, *, half_life_days: float) -> None:
        self.add_boot(sample.seconds, sample.censored, sample.age_days, half_life_days)

    def add_boot(self, seconds: float, censored: bool, age_days: float, half_life_days: float) -> None:
        """``add`` of one boot given by its values (a refit adds months of them: no sample made for each)."""
        weight = recency_weight(age_days, half_life_days=half_life_days)
        if weight <= 1e-9:
            return
        y = math.log(max(seconds, 1e-3))
        if censored:
            self.censored.append((y, weight))
        else:
            self.known_weight += weight
            self.known_y += weight * y
            self.known_y2 += weight * y * y


def boot_distribution(samples: Iterable[BootSample], *, prior: Prior, half_life_days: float = 14.0) -> LogNormal:
    """The boot-time distribution that ``samples`` (and the prior) imply."""
    stats = BootStats()
    for sample in samples:
        stats.add(sample, half_life_days=half_life_days)
    return boot_fit(stats, prior=prior)


def boot_fit(stats: BootStats, *, prior: Prior) -> LogNormal:
    """The distribution ``stats`` (and the prior) imply: the uncensored boots enter as their sums, and
    only the censored ones are revisited each EM round, so a fit costs a pass over the timeouts, not
    over all the boots."""
    p0, w0 = prior.distribution, max(prior.weight, 0.0)
    known_w, known_y, known_y2, censored = stats.known_weight, stats.known_y, stats.known_y2, stats.censored
    total = w0 + known_w + sum(w for _, w in censored)
    if total <= w0:
        return p0
    mu, sigma = p0.mu, p0.sigma
    for _ in range(EM_ROUNDS):
        sum_y = w0 * p0.mu + known_y
        sum_y2 = w0 * (p0.sigma**2 + p0.mu**2) + known_y2
        for y, w in censored:
            # E[Y | Y > y] and E[Y^2 | Y > y] for Y ~ Normal(mu, sigma).
            alpha = (y - mu) / sigma
            tail = 1.0 - _STANDARD.cdf(alpha)
            hazard = _STANDARD.pdf(alpha) / tail if tail > 1e-12 else alpha + 1.0 / max(alpha, 1e-6)
            sum_y += w * (mu + sigma * hazard)
            sum_y2 += w * (mu**2 + sigma**2 + sigma * (y + mu) * hazard)
        new_mu = sum_y / total
        new_sigma = max(MIN_SIGMA, math.sqrt(max(sum_y2 / total - new_mu**2, 0.0)))
        converged = abs(new_mu - mu) < 1e-7 and abs(new_sigma - sigma) < 1e-7
        mu, sigma = new_mu, new_sigma
        if converged or not censored:
            break
    return LogNormal(mu=mu, sigma=sigma)


def tail_held(fit: LogNormal, *, observed: float | None, samples: int, quantile: float = TAIL_QUANTILE) -> LogNormal:
    """``fit`` with its spread widened (median kept) so that its ``quantile`` is at least ``observed``, the
    same quantile of the key's uncensored boots; as it was with fewer than ``TAIL_MIN_SAMPLES`` of them,
    or when the fit's tail already reaches that far."""
    if observed is None or samples < TAIL_MIN_SAMPLES or observed <= fit.quantile(quantile):
        return fit
    return LogNormal(mu=fit.mu, sigma=(math.log(observed) - fit.mu) / _STANDARD.inv_cdf(quantile))


def ready_probability(distributions: Sequence[LogNormal], lead_seconds: float) -> float:
    """The chance that every host (one distribution each) is ready ``lead_seconds`` after launch."""
    probability = 1.0
    for distribution in distributions:
        probability *= distribution.cdf(lead_seconds)
    return probability


def plan_target(target: float, *, margin: float) -> float:
    """The probability a lead is planned for: ``target`` with ``margin`` of its allowed misses kept in reserve
    (0.99 with 0.5: 0.995). A lead aimed exactly at the target keeps it only on average; the misses of a
    week are random (binomial), so about every other week would land below it."""
    if not 0 < target < 1:
        raise ValueError(f"ELEPHANT_READY_TARGET must be strictly between 0 and 1 (got {target})")
    if not 0 <= margin < 1:
        raise ValueError(f"ELEPHANT_READY_MARGIN must be at least 0 and below 1 (got {margin})")
    return 1.0 - (1.0 - target) * (1.0 - margin)


def launch_lead(distributions: Sequence[LogNormal], *, target: float) -> float:
    """The smallest lead (seconds before ``meet_time``) with every host ready with ``target`` probability."""
    if not distributions:
        return 0.0
    if not 0 < target < 1:
        raise ValueError(f"ELEPHANT_READY_TARGET must be strictly between 0 and 1 (got {target})")
    # Each factor must be at least target, so the single-host target-quantile is a lower bound
    # and the target**(1/n)-quantile of the slowest an upper bound.
    low = max(d.quantile(target) for d in distributions)
    high = max(d.quantile(target ** (1.0 / len(distributions))) for d in distributions)
    for _ in range(60):
        middle = (low + high) / 2
        if ready_probability(distributions, middle) >= target:
            high = middle
        else:
            low = middle
        if high - low < 0.5:
            break
    return high


def health_timeout(distribution: LogNormal, *, quantile: float, floor_seconds: float, cap_seconds: float) -> float:
    """How long a host may take before it is judged not to come up: a far quantile of its own boot
    distribution, kept between ``floor_seconds`` and ``cap_seconds``."""
    return min(cap_seconds, max(floor_seconds, distribution.quantile(quantile)))
