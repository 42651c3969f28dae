import unicodedata
from datetime import datetime
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings

from meetings.services import meeting_schedule_validate

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


class ScheduleForm(forms.Form):
    student_name = forms.CharField(max_length=120, label="Student name")
    student_email = forms.EmailField(required=False, label="Student email (optional)")
    date = forms.DateField(label="Date", widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(label="Time", widget=forms.TimeInput(attrs={"type": "time"}))
    time_zone = forms.ChoiceField(label="Time zone", choices=[(tz, tz.replace("_", " ")) for tz in COMMON_TIME_ZONES])
    duration_minutes = forms.TypedChoiceField(label="Duration", choices=DURATION_CHOICES, coerce=int, initial=60)

    def clean_student_name(self):
        name = self.cleaned_data["student_name"]
        # The same rule as the API: names end up in calendar files, DynamoDB and page titles.
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise forms.ValidationError("Names cannot contain control characters.")
        return name

    def clean(self):
        cleaned = super().clean()
        date, time, tz = cleaned.get("date"), cleaned.get("time"), cleaned.get("time_zone")
        if date and time and tz:
            meet_time = datetime.combine(date, time, tzinfo=ZoneInfo(tz))
            duration = cleaned.get("duration_minutes") or 60
            errors = meeting_schedule_validate(meet_time=meet_time, time_zone=tz, duration_minutes=duration)
            if "meet_time" in errors:
                self.add_error("time", errors.pop("meet_time"))
            for field, message in errors.items():
                self.add_error(field if field in self.fields else None, message)
            cleaned["meet_time"] = meet_time
        return cleaned

    @staticmethod
    def past_tolerance() -> int:
        return settings.ELEPHANT_PAST_TOLERANCE_MINUTES
