"""Host health: what the fleet knows of a host's readiness, from its probes and its agent."""

from datetime import datetime

from django.utils import timezone

from fleet.models import Host


def host_agent_healthy(*, meeting_id: str, instance_id: str, now: datetime | None = None) -> bool:
    """The host's agent reported HEALTHY (through DynamoDB): record it once. True if newly recorded.

    The meeting's status is left to the health check, which combines the agent's word with
    its own probes.
    """
    return bool(
        Host.objects.filter(meeting_id=meeting_id, instance_id=instance_id, agent_healthy_at__isnull=True).update(
            agent_healthy_at=now or timezone.now()
        )
    )
