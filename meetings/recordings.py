"""The recordings the agents upload: the S3 URLs in ``teacher_session_data`` / ``student_session_data``,
offered as short-lived presigned download links.

A link is minted each time a page that shows it is rendered, for whoever may see that meeting (the
caller checks), valid ``ELEPHANT_RECORDING_LINK_SECONDS``. Presigning is a local computation with the
configured credentials (no request to S3). Understood forms:

- ``s3://bucket/key``;
- ``https://bucket.s3.<region>.amazonaws.com/key`` and ``https://bucket.s3.amazonaws.com/key`` (virtual-hosted);
- ``https://s3.<region>.amazonaws.com/bucket/key`` (path style);
- ``<AWS_ENDPOINT_URL>/bucket/key`` (the local endpoint of ``make run``).

Anything else is not signed (it is no object of ours to sign) and is shown as an unrecognised address.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError
from django.conf import settings

from elephant.aws import AwsError, aws_client
from meetings.models import Meeting, Role

_VIRTUAL_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$"
)
_PATH_HOST = re.compile(r"^s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


@dataclass(frozen=True)
class Recording:
    role: str
    url: str  # the presigned link; empty when there is none to offer
    problem: str = ""  # why not, in words for the page

    @property
    def label(self) -> str:
        return "Teacher's desktop" if self.role == Role.TEACHER else "Student's desktop"


def s3_object(address: str) -> S3Object | None:
    """The bucket and key an agent's session-data URL names, or None when it names no S3 object."""
    parts = urlsplit(address.strip())
    if parts.scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        return S3Object(bucket, key) if bucket and key else None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    host, path = parts.hostname.lower(), unquote(parts.path)
    if parts.scheme == "https" and (match := _VIRTUAL_HOST.match(host)):
        key = path.lstrip("/")
        return S3Object(match["bucket"], key) if key else None
    endpoint = urlsplit(settings.AWS_ENDPOINT_URL or "")
    local = endpoint.hostname and (host, parts.port) == (endpoint.hostname.lower(), endpoint.port)
    if (parts.scheme == "https" and _PATH_HOST.match(host)) or local:
        bucket, _, key = path.lstrip("/").partition("/")
        return S3Object(bucket, key) if bucket and key else None
    return None


def recording_link(address: str) -> str:
    """A presigned GET of the object ``address`` names; ``ValueError`` when it names none."""
    target = s3_object(address)
    if target is None:
        raise ValueError(f"not an S3 object address: {address[:80]!r}")
    return aws_client("s3").generate_presigned_url(
        "get_object",
        Params={"Bucket": target.bucket, "Key": target.key},
        ExpiresIn=settings.ELEPHANT_RECORDING_LINK_SECONDS,
    )


def meeting_recordings(meeting: Meeting) -> list[Recording]:
    """One presigned link per side that uploaded session data (none: an empty list, "no recording")."""
    recordings = []
    for role in Role.values:
        address = meeting.session_data(role)
        if not address:
            continue
        try:
            recordings.append(Recording(role=role, url=recording_link(address)))
        except ValueError:
            recordings.append(Recording(role=role, url="", problem="stored at an address Elephant cannot sign"))
        except (AwsError, BotoCoreError) as problem:  # no credentials or no usable endpoint: no link, no 500
            code = getattr(problem, "code", "") or type(problem).__name__
            recordings.append(Recording(role=role, url="", problem=f"no link can be made now ({code})"))
    return recordings
