"""A host's address for participants: its Route 53 record and the DCV link built on it."""

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


def host_record_write(*, host: Host, address: str) -> str:
    """Write the host's DNS record (UPSERT) and return its DCV link.

    Raises FleetConfigError or ``aws.AwsConfigError`` when the configuration is unusable, and
    ``aws.AwsTransientError`` when Route 53 does not answer (the task retries).
    """
    link = dcv_link_build(host=host, address=address)
    aws.dns_record_change(action="UPSERT", instance_id=host.instance_id, address=address)
    return link


def host_records_delete(hosts: Iterable[Host]) -> None:
    """Delete the hosts' DNS records; a failure is logged, not raised (the termination goes on)."""
    for host in hosts:
        try:
            aws.dns_record_change(action="DELETE", instance_id=host.instance_id, address=host.public_address)
        except aws.AwsError as exc:
            logger.warning("could not delete the DNS record of %s: %s", host.instance_id, exc)
