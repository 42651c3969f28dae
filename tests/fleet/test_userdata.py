"""The hosts' boot scripts (fleet.userdata): syntax, quoting of every value, no secret, and the stand-in's reading."""

import re
import subprocess
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from devtools.standin import parse_user_data
from fleet import services
from fleet.dcv import dcv_token_issue
from fleet.models import Host
from fleet.userdata import LINUX, WINDOWS, UserDataError, host_user_data, ps_quote, sh_quote
from tests.factories import make_meeting

HOSTILE = [
    "plain",
    "it's",
    "a'; rm -rf / #",
    '"$(touch /tmp/pwned)"',
    "`id`",
    "$HOME ${IFS} $env:PATH",
    "back\\slash\\'",
    "’ curly ‘ quotes ‚ ‛",
    "@(1) + $(2) ; & | < > %owner%",
    "ünïcödé 名前",
]


def render(os: str, value: str = "teacher", **overrides) -> str:
    values = {"meeting_id": "abcdefgh12345678", "role": "teacher", "dcv_username": value, **overrides}
    return host_user_data(os=os, **values)


class TestLinux:
    def test_the_script_parses(self, tmp_path):
        script = tmp_path / "user-data.sh"
        script.write_text(render(LINUX))
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert script.read_text().startswith("#!/bin/bash\n")

    @pytest.mark.parametrize("value", HOSTILE)
    def test_every_value_reaches_the_shell_unchanged(self, tmp_path, value, settings):
        """Run the script's assignments in bash and print them back: what the script holds is what was given."""
        script = render(LINUX, value, meeting_id=value, role=value)
        assignments = "\n".join(line for line in script.splitlines() if re.match(r"^[A-Z_]+=", line))
        probe = tmp_path / "probe.sh"
        probe.write_text(f'set -u\n{assignments}\nprintf \'%s\\0\' "$DCV_USER" "$MEETING_ID" "$ROLE" "$ELEPHANT_URL"')
        out = subprocess.run(["bash", str(probe)], check=True, capture_output=True, cwd=tmp_path).stdout.decode()
        assert out.split("\0")[:4] == [value, value, value, settings.ELEPHANT_PUBLIC_URL]
        assert not (tmp_path / "pwned").exists()
        (tmp_path / "full.sh").write_text(script)
        subprocess.run(["bash", "-n", str(tmp_path / "full.sh")], check=True)

    def test_it_configures_dcv_and_attests(self):
        script = render(LINUX)
        assert "curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 600'" in script  # IMDSv2
        assert 'auth-token-verifier="%s"' in script and "systemctl restart dcvserver" in script
        assert "dcv create-session --type console --owner" in script
        config = parse_user_data(script)
        assert config.verifier_base.endswith("/dcv/auth/")
        assert config.users == {"teacher"} and config.session_id == "console"
        assert config.attest_url.endswith("/fleet/attest")


def powershell_structure_problems(script: str) -> list[str]:
    """pwsh is not installed (``apt-cache policy powershell``: no candidate): a structural check instead.

    Walk the script as PowerShell's tokenizer would for strings: verbatim '...' (a quote doubled inside,
    any of the four quote characters PowerShell accepts), expandable "..." (a backtick escapes), comments;
    outside strings, brackets must balance. Returns what is wrong (nothing for a well-formed script).
    """
    body = script.removeprefix("<powershell>\n").removesuffix("</powershell>\n")
    problems, stack, i = [], [], 0
    single = "'\u2018\u2019\u201a\u201b"
    pairs = {")": "(", "}": "{", "]": "["}
    while i < len(body):
        ch = body[i]
        if ch == "#":
            i = body.find("\n", i) if "\n" in body[i:] else len(body)
            continue
        if ch in single:
            i += 1
            while i < len(body):
                if body[i] in single:
                    if i + 1 < len(body) and body[i + 1] in single:
                        i += 2
                        continue
                    break
                if body[i] == "\n":
                    problems.append("a verbatim string runs over a line end")
                i += 1
            else:
                problems.append("an unterminated verbatim string")
        elif ch == '"':
            i += 1
            while i < len(body) and body[i] != '"':
                i += 2 if body[i] == "`" else 1
            if i >= len(body):
                problems.append("an unterminated expandable string")
        elif ch in "({[":
            stack.append(ch)
        elif ch in ")}]":
            if not stack or stack.pop() != pairs[ch]:
                problems.append(f"an unbalanced {ch!r}")
        i += 1
    if stack:
        problems.append(f"unclosed {stack}")
    return problems


class TestWindows:
    def test_the_script_is_one_well_formed_powershell_block(self):
        script = render(WINDOWS)
        assert script.startswith("<powershell>\n") and script.endswith("</powershell>\n")
        assert script.count("<powershell>") == 1 and script.count("</powershell>") == 1
        assert powershell_structure_problems(script) == []

    def test_the_structural_check_finds_a_broken_script(self):
        assert powershell_structure_problems("<powershell>\n$A = 'x\n</powershell>\n")
        assert powershell_structure_problems("<powershell>\nif ($A) { echo 1\n</powershell>\n")

    @pytest.mark.parametrize("value", HOSTILE)
    def test_every_value_is_one_verbatim_string(self, value):
        script = render(WINDOWS, value, meeting_id=value, role=value)
        assert powershell_structure_problems(script) == []
        # Each value sits whole inside one verbatim string, read back exactly.
        for name in ("DcvUser", "MeetingId", "Role"):
            line = next(line for line in script.splitlines() if line.startswith(f"${name} = "))
            assert line == f"${name} = {ps_quote(value)}"
        assert parse_user_data(script).users == {value}
        assert script.count("</powershell>") == 1

    def test_it_configures_dcv_and_attests(self):
        script = render(WINDOWS)
        assert '-Method Put -Uri "$Imds/api/token"' in script  # IMDSv2
        assert "HKEY_USERS\\S-1-5-18\\Software\\GSettings\\com\\nicesoftware\\dcv" in script
        assert "automatic-console-session" in script and "Restart-Service -Name 'dcvserver'" in script
        config = parse_user_data(script)
        assert config.verifier_base.endswith("/dcv/auth/") and config.users == {"teacher"}
        assert config.attest_url.endswith("/fleet/attest")


@pytest.mark.parametrize("os", [LINUX, WINDOWS])
def test_no_secret_goes_into_user_data(os, settings):
    settings.SECRET_KEY = "s3cret-django-key-for-the-test"
    script = render(os)
    for secret in (settings.SECRET_KEY, "AWS_SECRET_ACCESS_KEY", "aws_secret", "testing"):
        assert secret not in script
    assert "authToken=" not in script and "password" not in script.lower()


@pytest.mark.parametrize("os", [LINUX, WINDOWS])
def test_control_characters_and_bad_urls_are_refused(os, settings):
    with pytest.raises(UserDataError):
        render(os, "teacher\nrm -rf /")
    settings.ELEPHANT_PUBLIC_URL = 'https://x.example/"; evil'
    with pytest.raises(UserDataError):
        render(os)


def test_quoting_helpers():
    assert sh_quote("it's") == "'it'\\''s'"
    assert ps_quote("it's") == "'it''s'"
    assert ps_quote("a\u2019b") == "'a\u2019\u2019b'"


def test_an_unknown_os_is_refused():
    with pytest.raises(UserDataError):
        host_user_data(os="macos", meeting_id="m", role="teacher", dcv_username="teacher")


# --- the stand-in behaves as the user data configures ---------------------------------------------
@pytest.fixture
def standin_app(standin_port, live_server, settings):
    settings.ELEPHANT_PUBLIC_URL = live_server.url
    return standin_port


def launched_student(meeting) -> Host:
    services.meeting_launch(meeting_id=meeting.pk)
    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        services.host_running(host_id=host_id, address=address, availability_zone=zone)
    return Host.objects.get(meeting=meeting, role="student")


@pytest.mark.django_db(transaction=True)
def test_the_stand_in_follows_the_hosts_user_data(standin_app):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    host = launched_student(meeting)
    token = dcv_token_issue(meeting_id=meeting.pk, role="student", instance_id=host.instance_id)
    page = requests.get(f"{host.dcv_link}?authToken={token}", timeout=10)
    assert page.status_code == 200 and "signed in as student" in page.text


@pytest.mark.django_db(transaction=True)
def test_without_a_verifier_in_the_user_data_dcv_authentication_fails(standin_app, monkeypatch):
    """A boot script that forgets auth-token-verifier leaves DCV on system authentication: the token fails."""
    from fleet import userdata

    broken = userdata.LINUX_TEMPLATE.replace('auth-token-verifier="%s"', "# (forgotten)")
    monkeypatch.setattr(userdata, "WINDOWS_TEMPLATE", broken)  # the default profile is Windows
    monkeypatch.setattr(userdata, "LINUX_TEMPLATE", broken)
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    host = launched_student(meeting)
    token = dcv_token_issue(meeting_id=meeting.pk, role="student", instance_id=host.instance_id)
    page = requests.get(f"{host.dcv_link}?authToken={token}", timeout=10)
    assert page.status_code == 403
    assert "no auth-token-verifier is configured" in page.text
