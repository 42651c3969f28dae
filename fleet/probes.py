"""HTTP(S) probes of the hosts' DCV endpoints, run concurrently with a timeout each."""

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import requests
import urllib3
from django.conf import settings

logger = logging.getLogger(__name__)

MAX_PARALLEL_PROBES = 32


def dcv_answers(url: str) -> bool:
    """True when the DCV web endpoint answers like a DCV server that is up.

    DCV serves its web client (200) or asks for authentication (401/403); a server still
    booting refuses the connection, times out or answers 5xx.
    """
    if not url:
        return False
    verify = settings.ELEPHANT_PROBE_VERIFY_TLS
    if not verify:
        # Hosts come up with DCV's self-signed certificate; liveness is all this asks.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    try:
        response = requests.get(
            url, timeout=settings.ELEPHANT_PROBE_TIMEOUT_SECONDS, verify=verify, allow_redirects=False
        )
    except requests.RequestException as exc:
        logger.debug("probe %s: %s", url, exc)
        return False
    return response.status_code < 400 or response.status_code in (401, 403)


def dcv_answers_many(urls: Iterable[str]) -> dict[str, bool]:
    """Probe every URL at once (bounded thread pool); URL -> answered."""
    unique = sorted(set(urls))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PROBES, len(unique))) as pool:
        return dict(zip(unique, pool.map(dcv_answers, unique), strict=True))
