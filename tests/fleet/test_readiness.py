"""The learned boot-time distribution and the launch lead it implies (fleet/readiness.py)."""

import math
import random

import pytest

from fleet.readiness import (
    BootSample,
    LogNormal,
    Prior,
    boot_distribution,
    health_timeout,
    launch_lead,
    plan_target,
    ready_probability,
    tail_held,
)

TRUE = LogNormal.from_median_p95(420, 1100)
PRIOR = Prior(LogNormal.from_median_p95(300, 600), weight=5)


def draw(distribution, n, seed=7):
    rng = random.Random(seed)
    return [math.exp(rng.gauss(distribution.mu, distribution.sigma)) for _ in range(n)]


def test_a_lognormal_given_by_median_and_p95_has_them():
    assert TRUE.median == pytest.approx(420)
    assert TRUE.quantile(0.95) == pytest.approx(1100)
    assert TRUE.cdf(1100) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        LogNormal.from_median_p95(500, 400)


def test_without_history_a_key_starts_from_its_prior():
    assert boot_distribution([], prior=PRIOR) == PRIOR.distribution


def test_hosts_that_timed_out_count_as_censored_not_dropped():
    timeout = 700.0
    boots = draw(TRUE, 2000)
    samples = [BootSample(min(b, timeout), censored=b > timeout) for b in boots]
    assert 0.15 < sum(s.censored for s in samples) / len(samples) < 0.35
    fitted = boot_distribution(samples, prior=PRIOR)
    dropped = boot_distribution([s for s in samples if not s.censored], prior=PRIOR)
    # The censored fit recovers the far tail that the timeout hid; dropping the timeouts
    # would promise a p99 hundreds of seconds too early.
    assert fitted.quantile(0.99) == pytest.approx(TRUE.quantile(0.99), rel=0.15)
    assert dropped.quantile(0.99) < 0.7 * TRUE.quantile(0.99)


def test_recent_boots_weigh_more_than_old_ones():
    old = [BootSample(1000, age_days=60) for _ in range(50)]
    new = [BootSample(200, age_days=0) for _ in range(10)]
    fitted = boot_distribution(old + new, prior=PRIOR, half_life_days=7)
    assert fitted.median < 260
    unweighted = boot_distribution(old + new, prior=PRIOR, half_life_days=10_000)
    assert unweighted.median > 700


def test_a_few_samples_move_the_estimate_from_the_prior_towards_the_data():
    few = boot_distribution([BootSample(900) for _ in range(3)], prior=PRIOR)
    many = boot_distribution([BootSample(900) for _ in range(300)], prior=PRIOR)
    assert PRIOR.distribution.median < few.median < many.median
    assert many.median == pytest.approx(900, rel=0.05)


def test_the_lead_makes_both_hosts_ready_with_the_target_probability_and_no_more():
    lead = launch_lead([TRUE, TRUE], target=0.99)
    assert ready_probability([TRUE, TRUE], lead) >= 0.99
    assert ready_probability([TRUE, TRUE], lead - 2) < 0.99
    # Two hosts need more lead than one: each must be ready with about 0.995.
    assert lead > TRUE.quantile(0.99)
    assert lead == pytest.approx(TRUE.quantile(math.sqrt(0.99)), rel=0.01)
    slow = LogNormal.from_median_p95(900, 2000)
    assert launch_lead([TRUE, slow], target=0.99) > launch_lead([slow], target=0.99)
    with pytest.raises(ValueError):
        launch_lead([TRUE], target=1.0)


def test_the_lead_is_planned_with_a_margin_of_the_targets_misses_in_reserve():
    assert plan_target(0.99, margin=0.5) == pytest.approx(0.995)
    assert plan_target(0.99, margin=0.0) == pytest.approx(0.99)
    assert plan_target(0.95, margin=0.8) == pytest.approx(0.99)
    # Aimed exactly at the target, a week of 800 lessons lands below it about every other week; at the
    # planned target, the expected misses (4) sit two standard deviations below the target's (8).
    misses_allowed, planned = 800 * (1 - 0.99), 800 * (1 - plan_target(0.99, margin=0.5))
    assert planned + 2 * math.sqrt(planned) <= misses_allowed + 0.5
    assert launch_lead([TRUE, TRUE], target=plan_target(0.99, margin=0.5)) > launch_lead([TRUE, TRUE], target=0.99)
    for target, margin in ((1.0, 0.5), (0.0, 0.5), (0.99, 1.0), (0.99, -0.1)):
        with pytest.raises(ValueError):
            plan_target(target, margin=margin)


def test_the_health_timeout_comes_from_the_same_distribution_within_bounds():
    assert health_timeout(TRUE, quantile=0.999, floor_seconds=300, cap_seconds=3600) == pytest.approx(
        TRUE.quantile(0.999)
    )
    fast = LogNormal.from_median_p95(20, 40)
    assert health_timeout(fast, quantile=0.999, floor_seconds=300, cap_seconds=3600) == 300


def test_the_tail_is_held_to_the_boots_seen_where_the_lognormal_bends_below_them():
    """A warm start of about 75 s seen through 15-second sweeps: the body is narrow, so the log-normal
    fitted to it puts its 99th percentile far below the slowest boots on record. Held to the observed
    99th percentile, its spread widens and its median stays; the lead grows with it."""
    rng = random.Random(3)
    boots = [15 * math.ceil((math.exp(rng.gauss(math.log(75), 0.42)) + rng.uniform(0, 30)) / 15) for _ in range(1600)]
    boots += [420] * 24  # a slow tail the body does not predict: 1.5 % of boots
    fit = boot_distribution([BootSample(s) for s in boots], prior=PRIOR)
    ordered = sorted(boots)
    p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
    assert fit.quantile(0.99) < p99  # the fit alone promises boots faster than those seen
    held = tail_held(fit, observed=p99, samples=len(boots))
    assert held.quantile(0.99) == pytest.approx(p99)
    assert held.median == pytest.approx(fit.median) and held.sigma > fit.sigma
    assert launch_lead([held, held], target=0.99) > launch_lead([fit, fit], target=0.99)
    # Never narrower than the fit, and nothing said on too few boots or none.
    assert tail_held(fit, observed=fit.quantile(0.99) / 2, samples=len(boots)) == fit
    assert tail_held(fit, observed=p99, samples=99) == fit
    assert tail_held(fit, observed=None, samples=len(boots)) == fit


def test_a_readiness_setting_the_lead_cannot_be_planned_with_is_refused_at_start_up(settings):
    from django.core.checks import run_checks

    def errors():
        return {message.id: message.msg for message in run_checks() if message.id.startswith("fleet.")}

    assert errors() == {}
    settings.ELEPHANT_READY_MARGIN = 1.0
    assert "ELEPHANT_READY_MARGIN" in errors()["fleet.E002"]
    settings.ELEPHANT_READY_MARGIN, settings.ELEPHANT_READY_TARGET = 0.5, 99
    assert "ELEPHANT_READY_TARGET" in errors()["fleet.E002"]
    settings.ELEPHANT_READY_TARGET, settings.ELEPHANT_LAUNCH_POLICY = 0.99, "eager"
    assert errors() == {"fleet.E001": "ELEPHANT_LAUNCH_POLICY must be one of learned, fixed (got 'eager')"}
