"""The teacher's schedule page: the shared definition of a valid schedule, picked as a local date and time."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from meetings.schedule import (
    DurationMinutesField,
    MeetingScheduleForm,
    TimeZoneField,
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


class ScheduleForm(MeetingScheduleForm):
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

    field_order = ["student_name", "student_email", "date", "time", "time_zone", "duration_minutes"]

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

    @staticmethod
    def past_tolerance() -> int:
        return settings.ELEPHANT_PAST_TOLERANCE_MINUTES
