from django.core.management.base import BaseCommand, CommandError

from meetings.apikeys import DEFAULT_PLAN_NAME, api_key_create, usage_plan_default
from meetings.models import UsagePlan


class Command(BaseCommand):
    help = "Create an API key for an integrator and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Who the key is for, e.g. 'acme-lms'.")
        parser.add_argument(
            "--plan",
            help=f"Usage plan name (default: {DEFAULT_PLAN_NAME!r}, created with default limits if missing).",
        )

    def handle(self, *args, name: str, plan: str | None, **options):
        name = name.strip()
        if not name or len(name) > 80:
            raise CommandError("The name must be 1 to 80 characters.")
        if plan and plan != DEFAULT_PLAN_NAME:
            usage_plan = UsagePlan.objects.filter(name=plan).first()
            if usage_plan is None:
                known = ", ".join(UsagePlan.objects.order_by("name").values_list("name", flat=True)) or "none"
                raise CommandError(f"No usage plan {plan!r} (known: {known}). Create it in the admin first.")
        else:
            usage_plan = usage_plan_default()
        key, plaintext = api_key_create(name=name, plan=usage_plan)
        self.stderr.write(f"Created API key {key.name!r} (prefix {key.prefix}, plan {usage_plan}).")
        self.stderr.write("This is the only time the key is shown; store it now:")
        self.stdout.write(plaintext)
