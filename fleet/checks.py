"""System checks of the readiness settings (``manage.py check``, and every command that runs checks:
runserver, migrate): a value the lead cannot be planned with is refused at start-up, naming the setting,
instead of failing the first plan sweep or booking."""

from django.conf import settings
from django.core import checks

from fleet import readiness
from fleet.services import planning


@checks.register(checks.Tags.compatibility)
def readiness_settings_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The same validation the plan and the lead run, asked once at start-up."""
    errors = []
    try:
        planning.learned()
    except ValueError as exc:
        errors.append(checks.Error(str(exc), id="fleet.E001"))
    try:
        readiness.plan_target(settings.ELEPHANT_READY_TARGET, margin=settings.ELEPHANT_READY_MARGIN)
    except ValueError as exc:
        errors.append(checks.Error(str(exc), id="fleet.E002"))
    return errors
