"""The launch planner within the account's limits (fleet/planner.py)."""

from datetime import UTC, datetime, timedelta

from fleet.planner import Demand, Limits, plan_launches, slot_of, vcpus_running

START = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
LEAD = timedelta(minutes=8)


def demand(key, meet_time=START, *, earliest_minutes=60, minutes=60, family="g4dn", vcpus=4):
    return Demand(
        key=key,
        deadline=meet_time - LEAD,
        earliest=meet_time - timedelta(minutes=earliest_minutes),
        end=meet_time + timedelta(minutes=minutes + 10),
        instances=2,
        vcpus_per_instance=vcpus,
        family=family,
    )


def test_a_quiet_hour_launches_every_meeting_at_its_deadline():
    plan = plan_launches([demand(f"m{i}", START + timedelta(minutes=30 * i)) for i in range(4)], Limits(120))
    assert plan.refused == []
    assert all(plan.launch_at[f"m{i}"] == START + timedelta(minutes=30 * i) - LEAD for i in range(4))


def test_a_crowded_hour_starts_earlier_instead_of_being_throttled_late():
    limits = Limits.from_bucket(refill_per_second=2, share=0.5, vcpu_quota={})  # 60 launches a minute
    assert limits.launches_per_slot == 60
    plan = plan_launches([demand(f"m{i:03}") for i in range(300)], limits)  # 600 hosts at 16:00
    assert plan.refused == []
    per_slot = {}
    for moment in plan.launch_at.values():
        assert moment <= START - LEAD
        per_slot[moment] = per_slot.get(moment, 0) + 2
    assert max(per_slot.values()) <= 60
    # As late as the bucket allows: ten full minutes ending at the deadline.
    assert sorted(per_slot) == [START - LEAD - timedelta(minutes=m) for m in range(9, -1, -1)]


def test_the_vcpu_quota_is_kept_at_every_minute_and_what_cannot_fit_is_refused():
    # 40 vCPUs of g4dn: five meetings of two 4-vCPU hosts at once.
    limits = Limits(launches_per_slot=100, vcpu_quota={"g4dn": 40})
    plan = plan_launches([demand(f"m{i}") for i in range(7)], limits)
    assert len(plan.launch_at) == 5
    assert len(plan.refused) == 2
    # Another family has its own quota.
    plan = plan_launches([demand(f"m{i}") for i in range(5)] + [demand("amd", family="g4ad")], limits)
    assert plan.refused == []


def test_hosts_already_running_count_against_the_quota():
    limits = Limits(launches_per_slot=100, vcpu_quota={"g4dn": 16})
    busy = vcpus_running([("g4dn", 12, START - timedelta(hours=1), START + timedelta(hours=2))])
    assert busy[("g4dn", slot_of(START))] == 12
    plan = plan_launches([demand("m1")], limits, occupied=busy)
    assert plan.refused == ["m1"]
    assert plan_launches([demand("m1")], limits).refused == []


def test_a_meeting_whose_room_lies_before_its_earliest_launch_is_refused():
    plan = plan_launches([demand(f"m{i}", earliest_minutes=9) for i in range(3)], Limits(launches_per_slot=2))
    # One meeting per minute; the window from 16:51 to 16:52 holds two.
    assert len(plan.launch_at) == 2
    assert plan.refused == ["m0"]
