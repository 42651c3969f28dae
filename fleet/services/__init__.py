"""The fleet's writes: launching, following, health-checking, replacing and terminating hosts.

One module per concern; this package is their public face (``from fleet import services``):

- ``launch``: meeting_launch, host_launch, meeting_reconcile, meeting_progress, host_retire, fleet_launch_sweep
- ``health``: hosts_health_check, meeting_health_check, fleet_health_sweep, host_agent_healthy (the mirror's door)
- ``watchdog``: fleet_watchdog_sweep (with the batched DNS step), host_running, host_dns_refused, host_lost
- ``termination``: fleet_termination_sweep, meeting_termination_rules_apply, meeting_terminate, meeting_fail,
  meeting_hosts_terminate, hosts_terminate
- ``reaper``: fleet_reap
- ``planning``: fleet_plan_sweep (the learned launch lead and the launch plan), schedule_admit (admission at
  booking), boot_estimates_refit, boot_samples_record, health_timeout_of
- ``pool``: fleet_pool_sweep (the warm pool's builds, stops and retirements), pool_instance_start
- ``dns``: dcv_link_build, host_records_delete, FleetConfigError
- ``transitions``: host_transition, hosts_transition (every host state change, with its HostEvent)

Meeting-side steps (status, reason, events) are ``meetings.services``' and the rules
``meetings.policy``'s; these functions call them, then do the host side. The sweeps
(``fleet_*_sweep``, ``fleet_reap``) are a constant number of queries whatever the number of
meetings: they select what is due in one query, make batched AWS calls, apply what they can in
bulk, and return the per-meeting work for the tasks to hand out.
"""

from fleet.services.dns import FleetConfigError, dcv_link_build, host_records_delete
from fleet.services.health import (
    HealthResult,
    fleet_health_sweep,
    host_agent_healthy,
    hosts_health_check,
    meeting_health_check,
)
from fleet.services.launch import (
    fleet_launch_sweep,
    host_launch,
    host_retire,
    meeting_launch,
    meeting_progress,
    meeting_reconcile,
)
from fleet.services.planning import PlanResult, boot_estimates_refit, fleet_plan_sweep, schedule_admit
from fleet.services.pool import PoolSweepResult, fleet_pool_sweep, pool_instance_start
from fleet.services.reaper import ReapResult, fleet_reap
from fleet.services.termination import (
    TerminationSweepResult,
    fleet_termination_sweep,
    hosts_terminate,
    meeting_fail,
    meeting_hosts_terminate,
    meeting_terminate,
    meeting_termination_rules_apply,
)
from fleet.services.transitions import host_transition, hosts_transition
from fleet.services.watchdog import WatchdogResult, fleet_watchdog_sweep, host_dns_refused, host_lost, host_running

__all__ = [
    "FleetConfigError",
    "HealthResult",
    "PlanResult",
    "PoolSweepResult",
    "ReapResult",
    "TerminationSweepResult",
    "WatchdogResult",
    "boot_estimates_refit",
    "dcv_link_build",
    "fleet_health_sweep",
    "fleet_launch_sweep",
    "fleet_plan_sweep",
    "fleet_pool_sweep",
    "fleet_reap",
    "fleet_termination_sweep",
    "fleet_watchdog_sweep",
    "host_agent_healthy",
    "host_dns_refused",
    "host_launch",
    "host_lost",
    "host_records_delete",
    "host_retire",
    "host_running",
    "host_transition",
    "hosts_health_check",
    "hosts_terminate",
    "hosts_transition",
    "meeting_fail",
    "meeting_health_check",
    "meeting_hosts_terminate",
    "meeting_launch",
    "meeting_progress",
    "meeting_reconcile",
    "meeting_terminate",
    "meeting_termination_rules_apply",
    "pool_instance_start",
    "schedule_admit",
]
