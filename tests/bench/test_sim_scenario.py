"""The simulator's scenario file: every key of the issue's example is understood, and a wrong value is
refused naming its key and why (the run would otherwise report figures for a world that cannot be)."""

import pytest

from bench.sim_scenario import Scenario, ScenarioError, sessions

EXAMPLE = {
    "seed": 7,
    "days": 7,
    "sessions_per_day": 800,
    "start_minutes": [0, 30],
    "hour_weights": {"15": 1, "16": 3, "17": 3, "18": 1},
    "duration_minutes": 60,
    "booking_lead_hours": {"lognormal": {"median": 48, "p95": 300}},
    "no_show_rate": 0.05,
    "boot_seconds": {
        "cold": {"lognormal": {"median": 420, "p95": 1100}},
        "warm": {"lognormal": {"median": 75, "p95": 150}},
    },
    "capacity": {"ice_probability": 0.02},
    "limits": {"run_instances_burst": 1000, "run_instances_per_second": 2, "vcpu_quota": 2000},
    "instance": {"type": "g4dn.xlarge", "vcpus": 4, "usd_per_hour": 0.71, "stopped_usd_per_hour": 0.01},
}


def test_the_issues_example_is_read_key_by_key():
    scenario = Scenario.from_dict({**EXAMPLE, "notes": "extra keys are allowed"})
    assert (scenario.days, scenario.sessions_per_day, scenario.start_minutes) == (7, 800, (0, 30))
    assert scenario.hour_weights == {15: 1.0, 16: 3.0, 17: 3.0, 18: 1.0}
    assert round(scenario.cold_boot.median) == 420 and round(scenario.cold_boot.quantile(0.95)) == 1100
    assert round(scenario.warm_boot.quantile(0.95)) == 150
    assert round(scenario.booking_lead_hours.quantile(0.95)) == 300
    assert (scenario.ice_probability, scenario.vcpu_quota, scenario.run_instances_burst) == (0.02, 2000, 1000)
    assert (scenario.instance_type, scenario.vcpus, scenario.usd_per_hour) == ("g4dn.xlarge", 4, 0.71)
    drawn = sessions(Scenario.from_dict({**EXAMPLE, "days": 1}))
    assert len(drawn) == 800 and {s.meet_time.hour for s in drawn} == {15, 16, 17, 18}
    assert {s.meet_time.minute for s in drawn} == {0, 30}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"days": "x"}, "days: a number"),
        ({"days": 0}, "days: at least 1"),
        ({"days": 1.5}, "days: a whole number"),
        ({"sessions_per_day": True}, "sessions_per_day: a number"),
        ({"start_minutes": [0, 60]}, "start_minutes: a list of minutes 0-59"),
        ({"start_minutes": []}, "start_minutes"),
        ({"hour_weights": {"24": 1}}, "hour_weights: hours 0-23"),
        ({"hour_weights": [16]}, "hour_weights: an object"),
        ({"no_show_rate": 1.2}, "no_show_rate: from 0 to 1"),
        ({"capacity": {"ice_probability": 1.5}}, "capacity.ice_probability: from 0 to 1"),
        ({"capacity": {"ice_probability": "often"}}, "capacity.ice_probability: a number"),
        ({"capacity": 0.02}, "capacity.ice_probability: capacity is an object"),
        ({"limits": {"vcpu_quota": 0}}, "limits.vcpu_quota: at least 1"),
        ({"limits": {"run_instances_per_second": -2}}, "limits.run_instances_per_second"),
        ({"instance": {"type": ""}}, "instance.type: a string"),
        ({"instance": {"usd_per_hour": 0}}, "instance.usd_per_hour"),
        ({"instance": {"os": "macos"}}, "instance.os: windows or linux"),
        ({"boot_seconds": {"cold": {"lognormal": {"median": 400, "p95": 100}}}}, "boot_seconds.cold: a lognormal"),
        ({"boot_seconds": {"warm": {"lognormal": {"median": 75}}}}, "boot_seconds.warm"),
        ({"boot_seconds": {"cold": {"fixed": -5}}}, "boot_seconds.cold: values from 0 up"),
        ({"boot_seconds": {"cold": {"uniform": [60, 30]}}}, "boot_seconds.cold"),
        ({"boot_seconds": {"cold": {"gamma": [2, 3]}}}, "unknown distribution 'gamma'"),
        ({"booking_lead_hours": "two days"}, "booking_lead_hours: a distribution is"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_key(change, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Scenario.from_dict({**EXAMPLE, **change})
