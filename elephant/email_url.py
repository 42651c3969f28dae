"""``DJANGO_EMAIL_URL``: how Elephant sends mail, as one URL read into Django's email settings.

- ``smtp://user:password@host:port``: SMTP, plain (port 25 unless given);
- ``smtp+tls://user:password@host:port``: SMTP with STARTTLS (port 587 unless given);
- ``smtps://user:password@host:port``: SMTP over TLS from the first byte (port 465 unless given);
- ``console:``: every mail is printed to the standard output of the process that sends it (the worker);
- ``memory:``: kept in ``django.core.mail.outbox`` (tests).

User and password are percent-decoded (``%40`` for an ``@`` in a user name). ``?timeout=<seconds>``
bounds each SMTP connection (default 10). A small parser rather than dj-email-url: that library knows
neither ``smtp+tls://`` nor ``console:``, the two forms this project documents.
"""

from urllib.parse import parse_qs, unquote, urlsplit

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "memory": "django.core.mail.backends.locmem.EmailBackend",
}
# scheme -> (default port, STARTTLS, implicit TLS)
SMTP_SCHEMES = {"smtp": (25, False, False), "smtp+tls": (587, True, False), "smtps": (465, False, True)}
DEFAULT_TIMEOUT_SECONDS = 10.0


class EmailUrlError(ValueError):
    pass


def email_settings(url: str) -> dict:
    """The Django settings (``EMAIL_BACKEND``, ``EMAIL_HOST``, ...) a ``DJANGO_EMAIL_URL`` names."""
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise EmailUrlError(f"DJANGO_EMAIL_URL {url!r} has no scheme; use smtp://, smtp+tls://, smtps:// or console:")
    if scheme in BACKENDS:
        return {"EMAIL_BACKEND": BACKENDS[scheme]}
    if scheme not in SMTP_SCHEMES:
        raise EmailUrlError(f"DJANGO_EMAIL_URL scheme {scheme!r} is not one of {', '.join([*SMTP_SCHEMES, *BACKENDS])}")
    parts = urlsplit(url)
    if not parts.hostname:
        raise EmailUrlError("DJANGO_EMAIL_URL names no host (smtp://host:port)")
    try:
        port = parts.port
    except ValueError as problem:
        raise EmailUrlError(f"DJANGO_EMAIL_URL has an unusable port: {problem}") from None
    default_port, starttls, implicit_tls = SMTP_SCHEMES[scheme]
    query = parse_qs(parts.query)
    try:
        timeout = float(query.get("timeout", [DEFAULT_TIMEOUT_SECONDS])[0])
    except ValueError:
        raise EmailUrlError("DJANGO_EMAIL_URL timeout must be a number of seconds") from None
    return {
        "EMAIL_BACKEND": SMTP_BACKEND,
        "EMAIL_HOST": parts.hostname,
        "EMAIL_PORT": port or default_port,
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": starttls,
        "EMAIL_USE_SSL": implicit_tls,
        "EMAIL_TIMEOUT": timeout,
    }
