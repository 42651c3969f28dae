"""A host's address for participants: the DCV link built on it, and deleting its Route 53 record.

The records are written by the watchdog, in one change batch per sweep (``fleet.services.watchdog``)."""

import logging
from collections.abc import Iterable

from django.conf import settings

from fleet import aws
from fleet.models import Host

logger = logging.getLogger(__name__)


class FleetConfigError(Exception):
    """A fleet setting is unusable (for example a DCV link template with an unknown field)."""


def dcv_link_build(*, host: Host, address: str) -> str:
    """The host's DCV link from ELEPHANT_DCV_URL_TEMPLATE; FleetConfigError when the template is unusable."""
    values = {
        "instance_id": host.instance_id,
        "domain": settings.ELEPHANT_DNS_DOMAIN,
        "address": address,
        "role": host.role,
        "meeting_id": host.meeting_id,
    }
    try:
        return settings.ELEPHANT_DCV_URL_TEMPLATE.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise FleetConfigError(
            f"ELEPHANT_DCV_URL_TEMPLATE {settings.ELEPHANT_DCV_URL_TEMPLATE!r} is invalid ({exc!r}); "
            f"it may use {', '.join('{' + k + '}' for k in values)}"
        ) from exc


def host_records_delete(hosts: Iterable[Host]) -> None:
    """Delete the hosts' DNS records (one change batch, each with the record's current value);
    a failure is logged, not raised (the termination goes on)."""
    instance_ids = [host.instance_id for host in hosts if host.instance_id]
    if not instance_ids:
        return
    try:
        aws.dns_records_delete(instance_ids)
    except aws.AwsError as exc:
        logger.warning("could not delete the DNS records of %s: %s", ", ".join(instance_ids), exc)
