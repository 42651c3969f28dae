"""A test stand-in for AWS's instance identity signing key (development and tests only, never deployed).

``identity_pair(directory)`` makes (once) an RSA key and a self-signed certificate in ``directory``: the DCV
stand-in signs each local host's instance identity document with the key, and the app verifies it against the
certificate (``ELEPHANT_AWS_IDENTITY_CERT``), exactly as it verifies AWS's documents against the region's public
AWS certificate on a real account.
"""

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "identity-key.pem"
CERT_FILE = "identity-cert.pem"
LOCAL_ACCOUNT = "123456789012"


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


def identity_pair(directory: Path) -> tuple[Path, Path]:
    """(key path, certificate path) in ``directory``, made on first use."""
    directory = Path(directory)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elephant local instance identity (test only)")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomically(key_path, key_pem)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def identity_document(*, instance: dict, region: str) -> str:
    """The instance identity document IMDS would serve for ``instance`` (a DescribeInstances item)."""
    launched = instance.get("LaunchTime")
    fields = {
        "accountId": LOCAL_ACCOUNT,
        "architecture": "x86_64",
        "availabilityZone": instance.get("Placement", {}).get("AvailabilityZone", ""),
        "imageId": instance.get("ImageId", ""),
        "instanceId": instance["InstanceId"],
        "instanceType": instance.get("InstanceType", ""),
        "pendingTime": launched.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(launched, datetime) else "",
        "privateIp": instance.get("PrivateIpAddress", ""),
        "region": region,
        "version": "2017-09-30",
    }
    return json.dumps(fields, indent=2)


def identity_sign(*, key_path: Path, document: str) -> str:
    """The base64 RSA-SHA256 ``signature`` of ``document``, as IMDS serves it."""
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    return base64.b64encode(key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
