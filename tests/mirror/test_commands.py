"""The mirror's commands ddb_bootstrap and ddb_resync, against a real moto server over HTTP."""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

import pytest
from django.core.management import CommandError, call_command

from meetings.models import MeetingStatus
from mirror import dynamo
from tests.factories import make_meeting, make_ready_meeting
from tests.mirror.dynamo_support import ddb  # noqa: F401


def test_resync_command_by_id_and_all(ddb, capsys):
    first, second = make_ready_meeting(), make_meeting(status=MeetingStatus.SCHEDULED)
    call_command("ddb_resync", first.id)
    assert dynamo.item_get(first.id)["status"] == "HEALTHY"
    assert dynamo.item_get(second.id) is None

    ddb.reset()  # the table lost everything
    call_command("ddb_bootstrap")
    call_command("ddb_resync", "--all")
    assert dynamo.item_get(first.id)["status"] == "HEALTHY"
    assert dynamo.item_get(second.id)["status"] == "SCHEDULED"
    assert "written 2, failed 0; backlog now 0 change(s)" in capsys.readouterr().out

    with pytest.raises(CommandError, match="Unknown meeting id"):
        call_command("ddb_resync", "zzzzzzzzzzzzzzzz")
    with pytest.raises(CommandError, match="Give meeting ids or --all"):
        call_command("ddb_resync")
