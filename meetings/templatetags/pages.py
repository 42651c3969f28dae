"""Template helpers of the teacher pages."""

from django import template

from meetings import progress

register = template.Library()


@register.filter
def reason_label(reason: str) -> str:
    """A termination reason in words (the code itself is kept for support)."""
    return progress.reason_label(reason)


@register.simple_tag
def status_hint(status: str) -> str:
    return progress.TEACHER_HINTS.get(status, "")


@register.filter
def utc_offset(moment) -> str:
    """An aware datetime's offset as "UTC+02:00". Django's ``date:"O"`` prints nothing for a time the
    clocks pass twice, which is exactly when the offset tells the two apart."""
    offset = moment.utcoffset()
    if offset is None:
        return ""
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
