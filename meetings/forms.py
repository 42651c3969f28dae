"""The teacher's schedule page: the shared definition of a valid schedule, picked as a local date and time."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from meetings.schedule import (
    DesktopProfileField,
    DurationMinutesField,
    MeetingScheduleForm,
    TimeZoneField,
    desktop_profile_choices,
    local_meet_time,
    validate_meet_time,
)

COMMON_TIME_ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Amsterdam",
    "Europe/Stockholm",
    "Europe/Warsaw",
    "Europe/Athens",
    "Europe/Helsinki",
    "Europe/Istanbul",
    "Europe/Moscow",
    "Africa/Lagos",
    "Africa/Cairo",
    "Africa/Johannesburg",
    "Africa/Nairobi",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Jakarta",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Manila",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Australia/Perth",
    "Australia/Brisbane",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Vancouver",
    "America/Denver",
    "America/Phoenix",
    "America/Chicago",
    "America/Mexico_City",
    "America/New_York",
    "America/Toronto",
    "America/Bogota",
    "America/Lima",
    "America/Santiago",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
]

DURATION_CHOICES = [(30, "30 minutes"), (45, "45 minutes"), (60, "1 hour"), (90, "1½ hours"), (120, "2 hours")]


class LocalMeetTimeMixin:
    """A form that picks a local date, time and zone: ``meet_time`` is their instant, checked once."""

    def clean(self):
        cleaned = super().clean()
        date, time, tz = cleaned.get("date"), cleaned.get("time"), cleaned.get("time_zone")
        if date and time and tz:
            try:
                meet_time = local_meet_time(date, time, tz)
                validate_meet_time(meet_time)
            except ValidationError as problem:
                self.add_error("time", problem)
            else:
                cleaned["meet_time"] = meet_time
        return cleaned


class ScheduleForm(LocalMeetTimeMixin, MeetingScheduleForm):
    """``MeetingScheduleForm`` as a teacher fills it in: their own name comes from their account, the
    time from a local date and time in the chosen zone; the zone and the duration are picked from lists."""

    teacher_name = None
    teacher_email = None
    meet_time = None  # composed in clean()
    date = forms.DateField(label="Date", widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(label="Time", widget=forms.TimeInput(attrs={"type": "time"}))
    time_zone = TimeZoneField(
        label="Time zone", widget=forms.Select(choices=[(tz, tz.replace("_", " ")) for tz in COMMON_TIME_ZONES])
    )
    duration_minutes = DurationMinutesField(label="Duration", widget=forms.Select(choices=DURATION_CHOICES), initial=60)

    desktop_profile = DesktopProfileField(label="Desktop", widget=forms.Select)
    repeat_weeks = forms.IntegerField(
        label="Weeks (1: once; more: the same time every week)",
        min_value=1,
        initial=1,
        required=False,
        help_text="1: once. More: the same time every week, each week its own session with its own links.",
    )
    field_order = [
        "student_name",
        "student_email",
        "date",
        "time",
        "time_zone",
        "duration_minutes",
        "desktop_profile",
        "repeat_weeks",
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["repeat_weeks"].max_value = settings.ELEPHANT_MAX_SERIES_WEEKS
        self.fields["repeat_weeks"].validators.append(MaxValueValidator(settings.ELEPHANT_MAX_SERIES_WEEKS))
        self.fields["repeat_weeks"].widget.attrs["max"] = settings.ELEPHANT_MAX_SERIES_WEEKS
        choices = desktop_profile_choices()
        if len(choices) > 1:  # the first is the default; blank means it too
            self.fields["desktop_profile"].widget.choices = choices
            self.fields["desktop_profile"].initial = choices[0][0]
        else:
            del self.fields["desktop_profile"]  # nothing to pick

    @staticmethod
    def past_tolerance() -> int:
        return settings.ELEPHANT_PAST_TOLERANCE_MINUTES


class RescheduleForm(LocalMeetTimeMixin, forms.Form):
    """Move a session: a new local date and time, zone and duration, judged like a new schedule."""

    date = forms.DateField(label="New date", widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(label="New time", widget=forms.TimeInput(attrs={"type": "time"}))
    time_zone = TimeZoneField(
        label="Time zone", widget=forms.Select(choices=[(tz, tz.replace("_", " ")) for tz in COMMON_TIME_ZONES])
    )
    duration_minutes = DurationMinutesField(label="Duration", widget=forms.Select(choices=DURATION_CHOICES))

    @classmethod
    def for_meeting(cls, meeting, data=None):
        local = meeting.local_meet_time
        initial = {
            "date": local.date(),
            "time": local.time().replace(second=0, microsecond=0),
            "time_zone": meeting.time_zone,
            "duration_minutes": meeting.duration_minutes,
        }
        form = cls(data, initial=initial, prefix="move")
        if meeting.time_zone not in COMMON_TIME_ZONES:
            form.fields["time_zone"].widget.choices = [
                (meeting.time_zone, meeting.time_zone),
                *form.fields["time_zone"].widget.choices,
            ]
        if meeting.duration_minutes not in dict(DURATION_CHOICES):
            minutes = meeting.duration_minutes
            form.fields["duration_minutes"].widget.choices = [(minutes, f"{minutes} minutes"), *DURATION_CHOICES]
        return form
