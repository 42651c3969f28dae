from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q

from meetings.admin import STAFF_ROLES


def staff_roles_apply() -> dict[str, int]:
    """Create or update each staff role's group so it holds exactly the role's permissions."""
    counts = {}
    with transaction.atomic():
        for role, names in STAFF_ROLES.items():
            wanted = {tuple(name.split(".", 1)) for name in names}
            query = Q(pk__in=[])
            for app_label, codename in wanted:
                query |= Q(content_type__app_label=app_label, codename=codename)
            permissions = list(Permission.objects.filter(query).select_related("content_type"))
            missing = wanted - {(p.content_type.app_label, p.codename) for p in permissions}
            if missing:
                names = ", ".join(sorted(".".join(name) for name in missing))
                raise CommandError(f"Unknown permissions for {role!r}: {names}. Run 'manage.py migrate' first.")
            group, _ = Group.objects.get_or_create(name=role)
            group.permissions.set(permissions)
            counts[role] = len(permissions)
    return counts


class Command(BaseCommand):
    help = (
        "Create or update the staff roles' groups (Support (view only), Operations) with exactly their "
        "permissions; optionally make a user staff in one role. Safe to run again (after every migrate)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", help="Username to make staff and put in --role (its other roles are removed).")
        parser.add_argument("--role", choices=sorted(STAFF_ROLES), help="The role for --user.")

    def handle(self, *args, user: str | None, role: str | None, **options):
        if bool(user) != bool(role):
            raise CommandError("Give --user and --role together.")
        for name, count in staff_roles_apply().items():
            self.stdout.write(f"{name}: {count} permissions")
        if user:
            account = get_user_model().objects.filter(username=user).first()
            if account is None:
                raise CommandError(f"No user {user!r}.")
            account.is_staff = True
            account.save(update_fields=["is_staff"])
            account.groups.remove(*Group.objects.filter(name__in=STAFF_ROLES))
            account.groups.add(Group.objects.get(name=role))
            self.stdout.write(f"{user} is staff in {role!r}.")
