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
