"""Desktop profiles at launch: which profile a meeting's host uses, and the launch it makes.

A meeting names its profile by name (``Meeting.desktop_profile``; blank: the default). A blank field of the
profile is the ``ELEPHANT_*`` setting of the same name, so the seeded default follows today's settings.
"""

from django.conf import settings

from elephant.prepared import PreparedRead
from fleet import aws
from fleet.models import DesktopOs, DesktopProfile
from fleet.userdata import UserDataError, host_user_data


def desktop_profile_choices() -> list[tuple[str, str]]:
    """The profiles teachers and the API may name, the default first (``meetings.schedule`` asks this)."""
    return [(profile.name, str(profile)) for profile in DesktopProfile.objects.filter(is_active=True)]


def builtin_default_profile() -> DesktopProfile:
    """What the seeded default is (fleet migration 0005), when staff deleted it or no row was ever made:
    today's settings, Windows, IMDSv1 allowed (the agents in today's images read metadata without a token)."""
    return DesktopProfile(name="default", os=DesktopOs.WINDOWS, allows_imdsv1=True, is_default=True)


# Read by every launch and booking, every plan and pool sweep: compiled once (elephant.prepared).
_default_profile = PreparedRead(lambda: DesktopProfile.objects.filter(is_default=True)[:1])
_profile_named = PreparedRead(lambda *, name: DesktopProfile.objects.filter(name=name)[:1])
_profiles_all = PreparedRead(lambda: DesktopProfile.objects.all())


def desktop_profiles_all() -> list[DesktopProfile]:
    """Every profile staff defined (active or not), in the model's order."""
    return _profiles_all()


def desktop_profile_resolve(name: str) -> DesktopProfile:
    """The profile a meeting named (blank: the default); ``AwsConfigError`` when the named one is gone."""
    if not name:
        return next(iter(_default_profile()), None) or builtin_default_profile()
    profile = next(iter(_profile_named(name=name)), None)
    if profile is None:
        raise aws.AwsConfigError(
            f"the desktop profile {name!r} does not exist; define it in the staff console",
            code="DesktopProfile",
            operation="Launch",
        )
    return profile


def launch_spec(
    *, profile: DesktopProfile, meeting_id: str, role: str, also_allowed: tuple[str, ...] = ()
) -> aws.LaunchSpec:
    try:
        user_data = host_user_data(
            os=profile.os,
            meeting_id=meeting_id,
            role=role,
            dcv_username=settings.ELEPHANT_DCV_USERNAME or role,
            also_allowed=() if settings.ELEPHANT_DCV_USERNAME else also_allowed,
        )
    except UserDataError as exc:
        raise aws.AwsConfigError(f"the boot script cannot be made: {exc}", code="UserData", operation="Launch") from exc
    overrides = {
        "image_id": profile.ami_id,
        "instance_types": tuple(profile.instance_type_list),
        "subnet_ids": tuple(profile.subnet_id_list),
        "security_group_ids": tuple(profile.security_group_id_list),
        "instance_profile": profile.instance_profile,
        "volume_size_gb": profile.volume_size_gb,
    }
    return aws.LaunchSpec.from_settings(
        **{name: value for name, value in overrides.items() if value},
        launch_template=profile.launch_template,
        launch_template_version=profile.launch_template_version,
        http_tokens="optional" if profile.allows_imdsv1 else "required",
        user_data=user_data,
    )


def host_launch_spec(*, host, profile: DesktopProfile | None = None) -> aws.LaunchSpec:
    """The launch of ``host``: its meeting's profile (``profile``, when the caller resolved it), with
    this host's boot script."""
    profile = profile or desktop_profile_resolve(host.meeting.desktop_profile)
    return launch_spec(profile=profile, meeting_id=host.meeting_id, role=host.role)


def pool_launch_spec(*, profile: DesktopProfile) -> aws.LaunchSpec:
    """The build of a warm-pool instance of ``profile``: its launch, with a boot script that lets
    either role's user name in (the instance learns its meeting and role only when it is started)."""
    roles = ("teacher", "student")
    return launch_spec(profile=profile, meeting_id="pool", role=roles[0], also_allowed=roles)
