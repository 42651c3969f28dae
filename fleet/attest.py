"""Host attestation: the host's boot script proves DCV is configured with Elephant's verifier.

At the end of its user data (``fleet.userdata``) the host POSTs to ``/fleet/attest``::

    {"document": <instance identity document, as IMDS served it>, "signature": <its base64 RSA-SHA256 signature>,
     "verifier": <the auth-token-verifier it set>, "session_id": <the DCV session it prepared>, ...}

The document is signed by AWS; it is verified against the region's public AWS certificate for the base64
``signature`` form (``ELEPHANT_AWS_IDENTITY_CERT``: a PEM, or the path of one; the certificates are published in
the EC2 User Guide, "AWS public certificates for instance identity document signatures"), as HashiCorp Vault's AWS
auth method does. The host is then the one named by the document's ``instanceId`` (and region), so no secret ever
goes into user data. Elephant accepts it only for a live host with that instance id, and only once
(``Host.attested_at``); the verifier must be the one Elephant's DCV authentication expects for that instance.
"""

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.utils import timezone

from elephant.prepared import PreparedRead, PreparedUpdate
from fleet.models import LIVE_HOST_STATES, Host, PoolInstance, PoolState

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 4096


class AttestationRefused(Exception):
    """The report is not a valid attestation; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    account_id: str


@lru_cache(maxsize=4)
def _certificate(value: str) -> x509.Certificate:
    pem = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    return x509.load_pem_x509_certificate(pem.encode())


def identity_certificate() -> x509.Certificate:
    value = settings.ELEPHANT_AWS_IDENTITY_CERT
    if not value:
        raise AttestationRefused("attestation is not configured (ELEPHANT_AWS_IDENTITY_CERT is empty)", status=503)
    try:
        return _certificate(value)
    except (OSError, ValueError) as exc:
        raise AttestationRefused(f"ELEPHANT_AWS_IDENTITY_CERT cannot be read: {exc}", status=503) from exc


def identity_verify(*, document: str, signature: str) -> Identity:
    """The identity an AWS-signed instance identity document states; ``AttestationRefused`` unless it verifies."""
    if not isinstance(document, str) or not isinstance(signature, str) or len(document) > MAX_DOCUMENT_BYTES:
        raise AttestationRefused("a document and its signature are required", status=400)
    try:
        raw_signature = base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AttestationRefused("the signature is not base64") from None
    key = identity_certificate().public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise AttestationRefused("ELEPHANT_AWS_IDENTITY_CERT is not the RSA certificate of the region", status=503)
    try:
        key.verify(raw_signature, document.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise AttestationRefused("the identity document's signature does not verify") from None
    try:
        fields = json.loads(document)
    except ValueError:
        raise AttestationRefused("the identity document is not JSON") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("instanceId"), str):
        raise AttestationRefused("the identity document names no instance")
    identity = Identity(
        instance_id=fields["instanceId"],
        region=str(fields.get("region", "")),
        account_id=str(fields.get("accountId", "")),
    )
    if settings.AWS_REGION and identity.region != settings.AWS_REGION:
        raise AttestationRefused(f"the host is in {identity.region!r}, not in {settings.AWS_REGION!r}")
    return identity


def expected_verifier(instance_id: str) -> str:
    return f"{settings.ELEPHANT_PUBLIC_URL}/dcv/auth/{instance_id}"


def host_attest(
    *, document: str, signature: str, verifier: str, session_id: str, now: datetime | None = None
) -> Host | PoolInstance:
    """Record the attestation of the live host (or the warm-pool instance being built) the document
    names, once; ``AttestationRefused`` otherwise."""
    identity = identity_verify(document=document, signature=signature)
    if verifier != expected_verifier(identity.instance_id):
        raise AttestationRefused("DCV's auth-token-verifier is not Elephant's for this host")
    if session_id != settings.ELEPHANT_DCV_SESSION_ID:
        raise AttestationRefused(f"the host prepared DCV session {session_id!r}, not the one Elephant links to")
    attested = instance_attested(instance_id=identity.instance_id, now=now)
    if attested is None:
        if Host.objects.filter(instance_id=identity.instance_id, state__in=LIVE_HOST_STATES).exists() or (
            PoolInstance.objects.filter(instance_id=identity.instance_id, state=PoolState.BUILDING).exists()
        ):
            raise AttestationRefused("this host has attested already", status=409)
        raise AttestationRefused("no live host has this instance id", status=404)
    return attested


def instance_attested(*, instance_id: str, now: datetime | None = None) -> Host | PoolInstance | None:
    """The verified host's report: record it on its live host, or on the warm-pool instance being built
    (a pool instance attests once, at its build; the configuration it proves stays on its volume).
    None when nothing was waiting for it."""
    now = now or timezone.now()
    if _host_attested({"attested_at": now}, instance_id=instance_id, attested=False):
        host = _hosts_live.get(instance_id=instance_id)
        logger.info("host %s (%s/%s) attested", instance_id, host.meeting_id, host.role)
        return host
    if _build_attested({"attested_at": now}, instance_id=instance_id, attested=False):
        logger.info("warm-pool instance %s attested", instance_id)
        return _builds.get(instance_id=instance_id)
    return None


def _live(*, instance_id: str, attested: bool | None = None):
    rows = Host.objects.filter(instance_id=instance_id, state__in=sorted(LIVE_HOST_STATES))
    return rows if attested is None else rows.filter(attested_at__isnull=not attested)


def _building(*, instance_id: str, attested: bool | None = None):
    rows = PoolInstance.objects.filter(instance_id=instance_id, state=PoolState.BUILDING)
    return rows if attested is None else rows.filter(attested_at__isnull=not attested)


# Every boot's report (and every simulated one): compiled once (elephant.prepared).
_host_attested = PreparedUpdate(_live)
_hosts_live = PreparedRead(_live)
_build_attested = PreparedUpdate(_building)
_builds = PreparedRead(_building)
