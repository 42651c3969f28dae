"""Create the demo staff account and demo teacher if they are missing (used by `make run`)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_ACCOUNTS = [
    # username, password, is_staff, first name, last name
    ("staff", "elephant-staff", True, "Sam", "Staff"),
    ("teacher", "elephant-teacher", False, "Tina", "Teacher"),
]


class Command(BaseCommand):
    help = "Create the demo staff account and the demo teacher if they do not exist; print their credentials."

    def handle(self, *args, **options):
        User = get_user_model()
        for username, password, is_staff, first, last in DEMO_ACCOUNTS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first, "last_name": last, "email": f"{username}@example.com"},
            )
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = is_staff
                user.save()
            state = "created" if created else "exists"
            self.stdout.write(f"  {'staff  ' if is_staff else 'teacher'}  {username} / {password}  ({state})")
