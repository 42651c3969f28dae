"""TURN credentials for the video room: coturn REST-API style, per participant, short-lived."""

import base64
import hashlib
import hmac

from meetings.ice import ice_servers_for, turn_credential

STUN = [{"urls": ["stun:stun.example.org:3478"]}]


def test_stun_only_without_a_turn_secret(settings):
    settings.ELEPHANT_ICE_SERVERS = STUN
    settings.ELEPHANT_TURN_SECRET = ""
    settings.ELEPHANT_TURN_URLS = ["turn:turn.example.org:3478"]
    assert ice_servers_for(meeting_id="abcdefghijklmnop", role="student") == (STUN, None)


def test_turn_credential_is_the_coturn_hmac_of_expiry_and_user(settings):
    settings.ELEPHANT_TURN_SECRET = "north-wind"
    settings.ELEPHANT_TURN_TTL_SECONDS = 600
    username, credential, expires_at = turn_credential(user="abcdefghijklmnop-student", now=1_800_000_000)
    assert expires_at == 1_800_000_600
    assert username == "1800000600:abcdefghijklmnop-student"
    expected = base64.b64encode(hmac.new(b"north-wind", username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected


def test_each_participant_gets_its_own_turn_entry_after_the_stun_servers(settings):
    settings.ELEPHANT_ICE_SERVERS = STUN
    settings.ELEPHANT_TURN_SECRET = "north-wind"
    settings.ELEPHANT_TURN_URLS = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    settings.ELEPHANT_TURN_TTL_SECONDS = 3600
    teacher, teacher_expiry = ice_servers_for(meeting_id="abcdefghijklmnop", role="teacher", now=1_800_000_000)
    student, _ = ice_servers_for(meeting_id="abcdefghijklmnop", role="student", now=1_800_000_000)

    assert teacher[0] == STUN[0] and student[0] == STUN[0]
    assert teacher_expiry == 1_800_003_600
    assert teacher[1]["urls"] == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    assert teacher[1]["username"] == "1800003600:abcdefghijklmnop-teacher"
    assert student[1]["username"] == "1800003600:abcdefghijklmnop-student"
    assert teacher[1]["credential"] != student[1]["credential"]
    # The settings list is not modified by issuing credentials.
    assert settings.ELEPHANT_ICE_SERVERS == STUN
