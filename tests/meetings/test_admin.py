"""The staff console: list, filters, search, event log, read-only fields, actions."""

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from meetings.models import Meeting, MeetingStatus
from tests.factories import make_meeting, make_staff


@pytest.fixture
def staff_client(client, db):
    client.force_login(make_staff())
    return client


@pytest.mark.django_db
class TestMeetingAdmin:
    def test_changelist_shows_status_names_and_local_time(self, staff_client):
        meeting = make_meeting(teacher_name="Tina T", student_name="Stu S", time_zone="Asia/Tokyo")
        page = staff_client.get("/admin/meetings/meeting/").content.decode()
        assert meeting.id in page and "Tina T" in page and "Stu S" in page
        assert f"{meeting.local_meet_time:%Y-%m-%d %H:%M} Asia/Tokyo" in page

    def test_filter_by_status_and_search_by_id_and_name(self, staff_client):
        a = make_meeting(student_name="Alice")
        b = make_meeting(student_name="Bob", status=MeetingStatus.FAILED)
        page = staff_client.get("/admin/meetings/meeting/?status__exact=FAILED").content.decode()
        assert b.id in page and a.id not in page
        page = staff_client.get("/admin/meetings/meeting/?q=Alice").content.decode()
        assert a.id in page and b.id not in page
        page = staff_client.get(f"/admin/meetings/meeting/?q={b.id}").content.decode()
        assert b.id in page and a.id not in page

    def test_change_page_shows_the_event_log_and_keeps_status_read_only(self, staff_client):
        from meetings.services import meeting_cancel

        meeting = make_meeting()
        meeting_cancel(meeting=meeting, actor="staff:sam")
        page = staff_client.get(f"/admin/meetings/meeting/{meeting.id}/change/").content.decode()
        assert "staff:sam" in page
        assert 'name="status"' not in page
        assert 'name="version"' not in page

    def test_cancel_action_uses_the_service(self, staff_client):
        scheduled = make_meeting()
        launching = make_meeting(status=MeetingStatus.LAUNCHING)
        response = staff_client.post(
            "/admin/meetings/meeting/",
            {"action": "cancel_meetings", "_selected_action": [scheduled.id, launching.id]},
            follow=True,
        )
        page = response.content.decode()
        assert "Cancelled 1 meeting(s)." in page
        assert launching.id in page  # named in the warning
        scheduled.refresh_from_db()
        launching.refresh_from_db()
        assert scheduled.status == MeetingStatus.CANCELLED
        assert scheduled.events.get().actor == "staff:sam"
        assert launching.status == MeetingStatus.LAUNCHING

    def test_staff_edit_of_a_scheduled_meeting_bumps_the_version_and_logs_it(self, staff_client):
        meeting = make_meeting(student_name="Old Name")
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/", _change_form(meeting, student_name="New Name")
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        meeting.refresh_from_db()
        assert meeting.student_name == "New Name"
        assert meeting.version == 2
        assert meeting.events.get().reason == "STAFF_EDIT"

    def test_staff_moving_a_meeting_drops_its_planned_launch(self, staff_client):
        planned = timezone.now() + timedelta(days=2)
        meeting = make_meeting(meet_time=planned, launch_at=planned - timedelta(minutes=40), launch_warm=True)
        moved = planned + timedelta(days=1)
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/", _change_form(meeting, meet_time=moved)
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        meeting.refresh_from_db()
        # Not launched a day early at the old plan: the fixed lead until the plan sweep plans it anew.
        assert meeting.launch_at is None and not meeting.launch_warm
        assert not Meeting.objects.due_for_launch(planned).filter(pk=meeting.pk).exists()

    def test_teachers_cannot_open_the_console(self, client):
        from tests.factories import make_teacher

        client.force_login(make_teacher())
        assert client.get("/admin/meetings/meeting/").status_code == 302


@pytest.mark.django_db
def test_usage_plan_list_counts_keys_in_constant_queries(staff_client, django_assert_max_num_queries):
    from meetings.models import ApiKey, UsagePlan

    def add_plans(n):
        for i in range(n):
            plan = UsagePlan.objects.create(name=f"plan-{UsagePlan.objects.count()}-{i}")
            ApiKey.objects.create(name=f"k{plan.pk}", prefix=f"p{plan.pk}", key_hash="x", plan=plan)

    add_plans(2)
    staff_client.get("/admin/meetings/usageplan/")  # warm caches (content types, session)
    with django_assert_max_num_queries(8) as few:
        page = staff_client.get("/admin/meetings/usageplan/").content.decode()
    add_plans(20)
    with django_assert_max_num_queries(len(few)):
        page = staff_client.get("/admin/meetings/usageplan/").content.decode()
    assert "plan-" in page


# --- the change form judges edits by the one definition of a valid schedule (meetings.schedule) ------
def change_form(meeting, **overrides):
    data = {
        "teacher": "",
        "teacher_name": meeting.teacher_name,
        "teacher_email": "",
        "student_name": meeting.student_name,
        "student_email": "",
        "meet_time_0": meeting.meet_time.strftime("%Y-%m-%d"),
        "meet_time_1": meeting.meet_time.strftime("%H:%M:%S"),
        "time_zone": meeting.time_zone,
        "duration_minutes": str(meeting.duration_minutes),
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }
    return data | overrides


@pytest.mark.django_db
class TestMeetingChangeForm:
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("time_zone", "Not/AZone", "Unknown time zone 'Not/AZone'; use an IANA name such as Europe/Berlin."),
            ("duration_minutes", "481", "Duration must be between 1 and 480 minutes."),
            ("student_name", "Stu\x07dent", "Control characters are not allowed."),
            # Issue 12: a zone directory used to be saved and then break the whole meeting list.
            ("time_zone", "America", "Unknown time zone 'America'; use an IANA name such as Europe/Berlin."),
            ("duration_minutes", "100000", "Duration must be between 1 and 480 minutes."),
            (
                "student_name",
                "Stu\u202eent",
                "Invisible formatting characters (such as right-to-left marks or zero-width spaces) are not allowed.",
            ),
        ],
    )
    def test_an_invalid_schedule_is_refused_with_a_field_error(self, staff_client, field, value, message):
        meeting = make_meeting()
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/", change_form(meeting, **{field: value})
        )
        assert response.status_code == 200
        assert response.context["adminform"].form.errors == {field: [message]}
        stored = type(meeting).objects.get(pk=meeting.pk)
        assert (stored.version, getattr(stored, field)) == (1, getattr(meeting, field))
        assert not stored.events.exists()

    def test_the_longest_duration_follows_the_setting(self, staff_client, settings):
        settings.ELEPHANT_MAX_DURATION_MINUTES = 90
        meeting = make_meeting()
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/", change_form(meeting, duration_minutes="91")
        )
        assert response.context["adminform"].form.errors == {
            "duration_minutes": ["Duration must be between 1 and 90 minutes."]
        }

    def test_a_new_time_in_the_past_is_refused(self, staff_client):
        from django.utils import timezone

        meeting = make_meeting()
        past = timezone.now() - timedelta(hours=2)
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/",
            change_form(meeting, meet_time_0=past.strftime("%Y-%m-%d"), meet_time_1=past.strftime("%H:%M:%S")),
        )
        assert list(response.context["adminform"].form.errors) == ["meet_time"]

    def test_a_new_time_beyond_the_window_is_refused(self, staff_client):
        meeting = make_meeting()
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/",
            change_form(meeting, meet_time_0="9999-12-31", meet_time_1="23:00:00"),
        )
        assert response.context["adminform"].form.errors == {"meet_time": ["That time is more than 365 days ahead."]}
        assert staff_client.get("/admin/meetings/meeting/").status_code == 200

    def test_an_untouched_time_that_has_passed_does_not_block_other_edits(self, staff_client):
        from django.utils import timezone

        meeting = make_meeting(meet_time=(timezone.now() - timedelta(hours=2)).replace(microsecond=0))
        response = staff_client.post(
            f"/admin/meetings/meeting/{meeting.id}/change/", change_form(meeting, student_name="New Name")
        )
        assert response.status_code == 302, response.context["adminform"].form.errors
        meeting.refresh_from_db()
        assert meeting.student_name == "New Name"


# --- staff roles: every action needs its permission (issue 12) ---------------------------------------
ELEPHANT_APPS = ("meetings", "fleet", "mirror")
MEETING_ACTIONS = {"cancel_meetings", "launch_now", "terminate_now", "rerun_health_check", "resync_to_dynamodb"}


@pytest.fixture
def roles(db):
    from django.core.management import call_command

    call_command("staff_roles", stdout=io.StringIO())


def staff_in(role: str, username: str):
    from django.contrib.auth.models import Group

    from tests.factories import make_teacher

    user = make_teacher(username, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return type(user).objects.get(pk=user.pk)  # a fresh copy: no cached permissions


def every_view_permission_user():
    from django.contrib.auth.models import Permission

    from tests.factories import make_teacher

    user = make_teacher("viola", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=ELEPHANT_APPS, codename__startswith="view_")
    )
    return type(user).objects.get(pk=user.pk)


def offered_actions(user) -> dict[str, set[str]]:
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return {
        model._meta.label: set(model_admin.get_actions(request))
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in ELEPHANT_APPS and model_admin.has_view_permission(request)
    }


@pytest.mark.django_db
class TestStaffRoles:
    def test_a_view_only_user_is_offered_no_action_anywhere(self, roles):
        for user in (every_view_permission_user(), staff_in("Support (view only)", "vera")):
            offered = offered_actions(user)
            assert "meetings.Meeting" in offered and "meetings.ApiKey" in offered and "mirror.MirrorBacklog" in offered
            assert offered == dict.fromkeys(offered, set())

    def test_operations_is_offered_every_action(self, roles):
        offered = offered_actions(staff_in("Operations", "otto"))
        assert offered["meetings.Meeting"] == MEETING_ACTIONS
        assert offered["meetings.ApiKey"] == {"deactivate_api_keys", "activate_api_keys"}
        assert offered["mirror.MirrorBacklog"] == {"retry_now"}

    @pytest.mark.parametrize("action", sorted(MEETING_ACTIONS))
    def test_a_view_only_user_cannot_run_a_meeting_action(self, client, roles, action):
        scheduled = make_meeting()
        running = make_meeting(status=MeetingStatus.IN_PROGRESS)
        client.force_login(staff_in("Support (view only)", "vera"))
        response = client.post(
            "/admin/meetings/meeting/", {"action": action, "_selected_action": [scheduled.id, running.id]}
        )
        assert response.status_code in (200, 302)
        for meeting in (scheduled, running):
            stored = type(meeting).objects.get(pk=meeting.pk)
            assert (stored.status, stored.version) == (meeting.status, meeting.version)
            assert not stored.events.exists()

    def test_a_view_only_user_cannot_reactivate_an_api_key(self, client, roles):
        from meetings.models import ApiKey, UsagePlan

        key = ApiKey.objects.create(
            name="old", prefix="p1", key_hash="x", plan=UsagePlan.objects.create(name="p"), is_active=False
        )
        client.force_login(staff_in("Support (view only)", "vera"))
        client.post("/admin/meetings/apikey/", {"action": "activate_api_keys", "_selected_action": [key.pk]})
        key.refresh_from_db()
        assert not key.is_active

        client.force_login(staff_in("Operations", "otto"))
        client.post("/admin/meetings/apikey/", {"action": "activate_api_keys", "_selected_action": [key.pk]})
        key.refresh_from_db()
        assert key.is_active

    def test_the_command_keeps_each_group_to_its_role(self, roles):
        from django.contrib.auth.models import Group, Permission
        from django.core.management import call_command

        support = Group.objects.get(name="Support (view only)")
        support.permissions.add(Permission.objects.get(codename="delete_meeting"))
        call_command("staff_roles", stdout=io.StringIO())
        codenames = set(support.permissions.values_list("codename", flat=True))
        assert codenames and all(name.startswith("view_") for name in codenames)

    def test_the_command_makes_a_user_staff_in_one_role(self, roles):
        from django.core.management import call_command

        from tests.factories import make_teacher

        user = make_teacher("vera")
        call_command("staff_roles", "--user", "vera", "--role", "Support (view only)", stdout=io.StringIO())
        call_command("staff_roles", "--user", "vera", "--role", "Operations", stdout=io.StringIO())
        user.refresh_from_db()
        assert user.is_staff and list(user.groups.values_list("name", flat=True)) == ["Operations"]


def _change_form(meeting, *, student_name=None, meet_time=None) -> dict:
    """The admin change form of ``meeting`` as staff submit it, with what they changed."""
    meet_time = meet_time or meeting.meet_time
    return {
        "teacher": "",
        "teacher_name": meeting.teacher_name,
        "teacher_email": "",
        "student_name": student_name or meeting.student_name,
        "student_email": "",
        "meet_time_0": meet_time.strftime("%Y-%m-%d"),
        "meet_time_1": meet_time.strftime("%H:%M:%S"),
        "time_zone": meeting.time_zone,
        "duration_minutes": "60",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }
