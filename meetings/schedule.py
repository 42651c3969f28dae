"""The one definition of a valid schedule: the teacher's form, the API, the staff console and the service use it.

``MeetingScheduleForm`` holds a field for each part of a schedule, and each field holds its one rule
(``validate_name``, ``validate_email_address``, ``validate_meet_time``, ``validate_time_zone``,
``validate_duration_minutes``), which reports the first problem it finds, in words a teacher or an
integrator can act on. The callers only present it differently:

- the teacher's page (``meetings.forms.ScheduleForm``) subclasses the form, picks the time as a local
  date and time and judges the composed moment with ``validate_meet_time``;
- the JSON API checks the JSON types of the body (strings, whole numbers, defaults for what is left out)
  and hands the values to ``schedule_clean``;
- the staff console's change form and ``meeting_schedule`` hand typed values to ``schedule_clean`` too.

Why a Django form and not a schema library (pydantic, marshmallow): the teacher's page and the staff
console are Django forms already, so a form is the only definition all three callers can use without
an adapter; it gives per-field errors in the ``{"field": ["message"]}`` shape the API answers with;
and every Django developer can read it. A schema library would add a dependency and a second
vocabulary for the same rules, and the pages would still need a form wrapped around it.
"""

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from meetings.models import Meeting

NAME_MAX_LENGTH = Meeting._meta.get_field("teacher_name").max_length
EMAIL_MAX_LENGTH = Meeting._meta.get_field("teacher_email").max_length
TIME_ZONE_MAX_LENGTH = Meeting._meta.get_field("time_zone").max_length
MEET_TIME_MAX_LENGTH = 64
MEET_TIME_EXAMPLE = "for example 2026-11-21T15:00:00Z or 2026-11-21T16:00:00+01:00"
UNKNOWN_TIME_ZONE = "Unknown time zone; use an IANA name such as Europe/Berlin."

SCHEDULE_FIELDS = (
    "teacher_name",
    "teacher_email",
    "student_name",
    "student_email",
    "meet_time",
    "time_zone",
    "duration_minutes",
    "desktop_profile",
)


# --- the rules, one per field -------------------------------------------------------------------
def validate_name(value: str) -> None:
    if len(value) > NAME_MAX_LENGTH:
        raise ValidationError(f"At most {NAME_MAX_LENGTH} characters.", code="max_length")
    # Names end up in calendar files, DynamoDB and page titles.
    categories = {unicodedata.category(ch) for ch in value}
    if "Cc" in categories:
        raise ValidationError("Control characters are not allowed.", code="control_characters")
    if "Cs" in categories:
        # A lone UTF-16 surrogate ("\ud800" in JSON) is no character: nothing can store or print it.
        raise ValidationError("Not valid Unicode text (a lone surrogate).", code="surrogate")
    if "Cf" in categories:
        # Invisible formatting (right-to-left override, zero-width space) makes a name read as another.
        raise ValidationError(
            "Invisible formatting characters (such as right-to-left marks or zero-width spaces) are not allowed.",
            code="format_characters",
        )


def validate_email_address(value: str) -> None:
    if len(value) > EMAIL_MAX_LENGTH:
        raise ValidationError(f"At most {EMAIL_MAX_LENGTH} characters.", code="max_length")
    validate_email(value)


def validate_meet_time(value: datetime) -> None:
    """An aware moment from ELEPHANT_PAST_TOLERANCE_MINUTES ago to ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS ahead."""
    if timezone.is_naive(value):
        raise ValidationError(f"Give the time with its UTC offset or Z ({MEET_TIME_EXAMPLE}).", code="naive")
    tolerance = settings.ELEPHANT_PAST_TOLERANCE_MINUTES
    ahead_days = settings.ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS
    too_early = ValidationError(f"That time is more than {tolerance} minutes in the past.", code="past")
    too_late = ValidationError(f"That time is more than {ahead_days} days ahead.", code="too_far_ahead")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # in year 1 or 9999: far outside the window either way
        raise (too_late if value.year > 1 else too_early) from None
    now = timezone.now()
    if utc < now - timedelta(minutes=tolerance):
        raise too_early
    if utc > now + timedelta(days=ahead_days):
        raise too_late


def local_meet_time(day: date, clock: time, time_zone: str) -> datetime:
    """The moment a wall-clock date and time names in ``time_zone`` (a valid zone name).

    A time the clocks skip (02:30 on a spring-forward night in Europe/Berlin) names no moment and is
    refused; a time they pass twice (02:30 on an autumn night) is the first of the two, the one
    still on summer time (``fold=0``), and the pages show its UTC offset.
    """
    zone = ZoneInfo(time_zone)
    moment = datetime.combine(day, clock, tzinfo=zone)
    try:
        round_trip = moment.astimezone(UTC).astimezone(zone)
    except OverflowError:
        return moment  # year 1 or 9999: validate_meet_time refuses it
    if round_trip.replace(tzinfo=None) != moment.replace(tzinfo=None):
        raise ValidationError(
            f"{clock:%H:%M} does not exist on {day:%Y-%m-%d} in {time_zone}: the clocks skip it "
            f"(they jump to {round_trip:%H:%M}). Pick another time.",
            code="nonexistent_local_time",
        )
    return moment


@cache
def time_zone_names() -> frozenset[str]:
    """The IANA zones this machine knows, less the two that are no place: ``localtime`` (whatever zone
    the server runs in) and ``Factory``. Asking ``ZoneInfo`` alone is not enough: it opens any file
    under the zone directories, so ``America`` (a directory) or ``zone.tab`` fail with an OSError."""
    return frozenset(available_timezones() - {"localtime", "Factory"})


def validate_time_zone(value: str) -> None:
    if len(value) > TIME_ZONE_MAX_LENGTH:
        raise ValidationError(UNKNOWN_TIME_ZONE, code="unknown_time_zone")
    if value not in time_zone_names():
        raise ValidationError(
            f"Unknown time zone {value!r}; use an IANA name such as Europe/Berlin.", code="unknown_time_zone"
        )


def validate_duration_minutes(value: int) -> None:
    # Read per call, not at import: the maximum is a setting.
    maximum = settings.ELEPHANT_MAX_DURATION_MINUTES
    if not 1 <= value <= maximum:
        raise ValidationError(f"Duration must be between 1 and {maximum} minutes.", code="duration")


# The desktop profiles a meeting may name: meetings knows no fleet model, so the fleet registers a
# callable answering [(name, label), ...] (fleet.apps.FleetConfig.ready); none registered: none offered.
_desktop_profile_choices: Callable[[], list[tuple[str, str]]] | None = None


def desktop_profile_choices_register(choices: Callable[[], list[tuple[str, str]]]) -> None:
    global _desktop_profile_choices
    _desktop_profile_choices = choices


def desktop_profile_choices() -> list[tuple[str, str]]:
    return list(_desktop_profile_choices()) if _desktop_profile_choices is not None else []


# Admission (issue 11): whether the fleet can have desktops ready for these starts. meetings knows no
# fleet, so the fleet registers a callable (fleet.apps.FleetConfig.ready) taking the starts, the duration,
# the profile and the meeting being moved (or ""), and answering one ``Admission`` per start or raising
# ``ValidationError`` (on ``meet_time``, naming start times that can be served). None registered: all admitted.
@dataclass(frozen=True)
class Admission:
    launch_at: datetime | None = None  # when the fleet plans to launch (None: meet_time - ELEPHANT_LAUNCH_LEAD)
    warm: bool = False  # planned on warm-pool instances


Admit = Callable[..., list[Admission]]
_admission: Admit | None = None


def schedule_admission_register(admit: Admit | None) -> None:
    global _admission
    _admission = admit


def schedule_admit(
    *, starts: list[datetime], duration_minutes: int, desktop_profile: str = "", exclude_meeting_id: str = ""
) -> list[Admission]:
    """One ``Admission`` per start, or ``ValidationError`` when the fleet cannot serve one. Called inside
    the booking's transaction (the fleet serialises admissions there)."""
    if _admission is None:
        return [Admission() for _ in starts]
    return _admission(
        starts=starts,
        duration_minutes=duration_minutes,
        desktop_profile=desktop_profile,
        exclude_meeting_id=exclude_meeting_id,
    )


def validate_desktop_profile(value: str) -> None:
    """Blank (the default profile) or the name of an offered profile."""
    if value and value not in {name for name, _ in desktop_profile_choices()}:
        names = ", ".join(name for name, _ in desktop_profile_choices()) or "none"
        raise ValidationError(f"Unknown desktop profile {value!r}; choose one of: {names}.", code="desktop_profile")


# --- the fields ---------------------------------------------------------------------------------
class NameField(forms.CharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=NAME_MAX_LENGTH, **kwargs)
        # The one rule instead of CharField's own length and NUL checks, so a value gets one message.
        self.validators = [validate_name]


class EmailAddressField(forms.EmailField):
    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(max_length=EMAIL_MAX_LENGTH, **kwargs)
        self.validators = [validate_email_address]


class MeetTimeField(forms.Field):
    """An aware datetime, or an ISO 8601 text with its UTC offset (what the API sends)."""

    widget = forms.DateTimeInput
    default_validators = [validate_meet_time]

    def to_python(self, value):
        if not isinstance(value, str):
            return value  # None (missing) or a datetime already
        if len(value) > MEET_TIME_MAX_LENGTH:
            raise ValidationError("Too long for a date and time.", code="too_long")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"Not an ISO 8601 date and time ({MEET_TIME_EXAMPLE}).", code="invalid") from None


class TimeZoneField(forms.CharField):
    """An IANA time zone name, taken as given (no stripping: " UTC" is not a zone)."""

    default_error_messages = {"required": UNKNOWN_TIME_ZONE}

    def __init__(self, **kwargs):
        super().__init__(strip=False, **kwargs)
        self.validators = [validate_time_zone]


class DesktopProfileField(forms.CharField):
    """A desktop profile's name, picked from the profiles offered when the form is made (blank: the default)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(max_length=Meeting._meta.get_field("desktop_profile").max_length, **kwargs)
        self.validators = [validate_desktop_profile]


class DurationMinutesField(forms.IntegerField):
    default_error_messages = {"invalid": "Must be a whole number of minutes."}
    default_validators = [validate_duration_minutes]


# --- the definition -----------------------------------------------------------------------------
class MeetingScheduleForm(forms.Form):
    """A valid schedule: who meets, when (an aware moment), in which time zone, for how long."""

    teacher_name = NameField(label="Teacher name")
    teacher_email = EmailAddressField(label="Teacher email (optional)")
    student_name = NameField(label="Student name")
    student_email = EmailAddressField(label="Student email (optional)")
    meet_time = MeetTimeField(label="Meeting time")
    time_zone = TimeZoneField(label="Time zone")
    duration_minutes = DurationMinutesField(label="Duration")
    desktop_profile = DesktopProfileField(label="Desktop")


def schedule_clean(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Judge the schedule fields given in ``values`` (any subset): their cleaned values and their errors.

    Only the fields given are judged, so the API can leave out what already failed its JSON checks
    and the staff console can judge only what staff changed.
    """
    unknown = set(values) - set(SCHEDULE_FIELDS)
    if unknown:
        raise TypeError(f"Not part of a schedule: {', '.join(sorted(unknown))}")
    form = MeetingScheduleForm(data=values)
    form.fields = {name: field for name, field in form.fields.items() if name in values}
    form.is_valid()
    errors = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
    return form.cleaned_data, errors
