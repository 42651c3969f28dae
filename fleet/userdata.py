# ruff: noqa: E501  (the templates are scripts; their lines stay whole)
"""Each host's first-boot script (EC2 user data): what makes DCV trust Elephant.

``host_user_data(os=, meeting_id=, role=, dcv_username=)`` renders, for one host:

- Windows: a ``<powershell>`` block (EC2Launch runs it once, as LocalSystem, at first boot);
- Linux: a ``#!/bin/bash`` script (cloud-init runs it once, as root).

Both do the same, in the same order (docs/fleet.md "Running on a real AWS account"):

1. read the instance id from IMDSv2 (a session token first: the script never needs IMDSv1);
2. set DCV's ``auth-token-verifier`` to ``{ELEPHANT_PUBLIC_URL}/dcv/auth/{instance id}``, so DCV hands every
   ``?authToken=`` to Elephant instead of authenticating against the OS;
3. write a permissions file granting the authenticator's user name (``teacher``/``student``, or
   ``ELEPHANT_DCV_USERNAME``) full (builtin) access and make it the console session's (``ELEPHANT_DCV_SESSION_ID``)
   permissions, with that name as its owner: on Windows the automatic console session is reconfigured (by default
   it is the Administrator's, and only the owner may connect); on Linux, where DCV creates no console session by
   itself, the session is created;
4. restart DCV and, once the session exists, attest: POST the instance identity document and its signature to
   ``{ELEPHANT_PUBLIC_URL}/fleet/attest`` (``fleet.attest``).

The script carries no secret: the host proves who it is with the document AWS signs for it. Every value put in a
script is quoted for its language (``ps_quote``, ``sh_quote``), whatever a profile or a meeting holds. The agents'
DynamoDB contract is not touched (they find their meeting by instance id, as before).
"""

import re
from collections.abc import Sequence

from django.conf import settings

WINDOWS = "windows"
LINUX = "linux"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses user data over 16 KB (before base64)
ATTEST_PATH = "/fleet/attest"
LINUX_PERMISSIONS_FILE = "/etc/dcv/elephant-permissions.txt"
WINDOWS_PERMISSIONS_FILE = r"C:\ProgramData\Elephant\dcv-permissions.txt"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UserDataError(ValueError):
    """A value cannot go into a boot script (a control character, or the script would be too long)."""


def _plain(value: str, what: str) -> str:
    value = str(value)
    if _CONTROL.search(value):
        raise UserDataError(f"{what} holds a control character")
    return value


def ps_quote(value: str, what: str = "a value") -> str:
    """A PowerShell verbatim string: single quotes, no expansion; a quote (any of PowerShell's four) is doubled."""
    value = _plain(value, what)
    return "'" + re.sub(r"(['\u2018\u2019\u201a\u201b])", r"\1\1", value) + "'"


def sh_quote(value: str, what: str = "a value") -> str:
    """A POSIX shell single-quoted string: no expansion; a quote ends, is escaped, and restarts the string."""
    return "'" + _plain(value, what).replace("'", "'\\''") + "'"


def _values(*, meeting_id: str, role: str, dcv_username: str) -> dict[str, str]:
    if re.search(r'["\\\s]', settings.ELEPHANT_PUBLIC_URL):
        raise UserDataError("ELEPHANT_PUBLIC_URL holds a quote, a backslash or a space: DCV's configuration cannot")
    return {
        "elephant_url": settings.ELEPHANT_PUBLIC_URL,
        "session_id": settings.ELEPHANT_DCV_SESSION_ID,
        "dcv_user": dcv_username,
        "meeting_id": meeting_id,
        "role": role,
    }


WINDOWS_TEMPLATE = r"""<powershell>
# Elephant first-boot configuration (fleet/userdata.py). No secret here: the host attests with its identity document.
$ErrorActionPreference = 'Stop'
$ElephantUrl = {elephant_url}
$SessionId = {session_id}
$DcvUser = {dcv_user}
$MeetingId = {meeting_id}
$Role = {role}
$Permissions = {permissions_file}
$Imds = 'http://169.254.169.254/latest'

# 1. The instance id, from IMDSv2.
$ImdsToken = Invoke-RestMethod -Method Put -Uri "$Imds/api/token" -Headers @{{ 'X-aws-ec2-metadata-token-ttl-seconds' = '600' }}
$ImdsHeaders = @{{ 'X-aws-ec2-metadata-token' = $ImdsToken }}
$InstanceId = Invoke-RestMethod -Uri "$Imds/meta-data/instance-id" -Headers $ImdsHeaders
$Verifier = "$ElephantUrl/dcv/auth/$InstanceId"

# 2. DCV asks Elephant about every authToken.
$DcvKey = 'Registry::HKEY_USERS\S-1-5-18\Software\GSettings\com\nicesoftware\dcv'
New-Item -Path "$DcvKey\security" -Force | Out-Null
New-ItemProperty -Path "$DcvKey\security" -Name 'auth-token-verifier' -Value $Verifier -PropertyType String -Force | Out-Null

# 3. The console session: owned by the authenticator's user name, which may use all of it.
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $Permissions) | Out-Null
Set-Content -Path $Permissions -Encoding ASCII -Value @('[permissions]', '%owner% allow builtin', "$DcvUser allow builtin"{extra_permissions})
$ConsoleKey = "$DcvKey\session-management\automatic-console-session"
New-Item -Path $ConsoleKey -Force | Out-Null
New-ItemProperty -Path $ConsoleKey -Name 'owner' -Value $DcvUser -PropertyType String -Force | Out-Null
New-ItemProperty -Path $ConsoleKey -Name 'permissions-file' -Value $Permissions -PropertyType String -Force | Out-Null
New-Item -Path "$DcvKey\session-management" -Force | Out-Null
New-ItemProperty -Path "$DcvKey\session-management" -Name 'create-session' -Value 1 -PropertyType DWord -Force | Out-Null

# 4. Restart DCV, wait for the session, then attest.
Restart-Service -Name 'dcvserver'
$Dcv = 'C:\Program Files\NICE\DCV\Server\bin\dcv.exe'
for ($Try = 0; $Try -lt 60; $Try++) {{
    & $Dcv describe-session $SessionId *> $null
    if ($LASTEXITCODE -eq 0) {{ break }}
    Start-Sleep -Seconds 5
}}
& $Dcv set-permissions --session $SessionId --file $Permissions
$Document = (Invoke-WebRequest -UseBasicParsing -Uri "$Imds/dynamic/instance-identity/document" -Headers $ImdsHeaders).Content
$Signature = (Invoke-WebRequest -UseBasicParsing -Uri "$Imds/dynamic/instance-identity/signature" -Headers $ImdsHeaders).Content
$Report = @{{ document = $Document; signature = $Signature; verifier = $Verifier; session_id = $SessionId; meeting_id = $MeetingId; role = $Role }}
Invoke-RestMethod -Method Post -Uri "$ElephantUrl{attest_path}" -ContentType 'application/json' -Body ($Report | ConvertTo-Json -Compress)
</powershell>
"""

LINUX_TEMPLATE = r"""#!/bin/bash
# Elephant first-boot configuration (fleet/userdata.py). No secret here: the host attests with its identity document.
set -euo pipefail
ELEPHANT_URL={elephant_url}
SESSION_ID={session_id}
DCV_USER={dcv_user}
MEETING_ID={meeting_id}
ROLE={role}
PERMISSIONS={permissions_file}
IMDS='http://169.254.169.254/latest'

# 1. The instance id, from IMDSv2.
imds_token="$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 600' "$IMDS/api/token")"
imds() {{ curl -sSf -H "X-aws-ec2-metadata-token: $imds_token" "$IMDS/$1"; }}
instance_id="$(imds meta-data/instance-id)"
verifier="$ELEPHANT_URL/dcv/auth/$instance_id"

# 2. DCV asks Elephant about every authToken (earlier values of the keys Elephant sets are dropped).
sed -i -e '/^[[:space:]]*auth-token-verifier[[:space:]]*=/d' /etc/dcv/dcv.conf
printf '\n[security]\nauth-token-verifier="%s"\n' "$verifier" >> /etc/dcv/dcv.conf

# 3. The console session: owned by the authenticator's user name, which may use all of it.
printf '[permissions]\n%%owner%% allow builtin\n%s allow builtin\n' "$DCV_USER" > "$PERMISSIONS"
{extra_permissions}chmod 0644 "$PERMISSIONS"
systemctl restart dcvserver
for _ in $(seq 60); do dcv list-sessions >/dev/null 2>&1 && break; sleep 5; done
if dcv describe-session "$SESSION_ID" >/dev/null 2>&1; then
    dcv set-permissions --session "$SESSION_ID" --file "$PERMISSIONS"
else
    dcv create-session --type console --owner "$DCV_USER" --permissions-file "$PERMISSIONS" "$SESSION_ID"
fi

# 4. Attest.
document="$(imds dynamic/instance-identity/document)"
signature="$(imds dynamic/instance-identity/signature)"
python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
    document "$document" signature "$signature" verifier "$verifier" session_id "$SESSION_ID" \
    meeting_id "$MEETING_ID" role "$ROLE" \
  | curl -sSf --retry 10 --retry-connrefused -X POST -H 'Content-Type: application/json' --data-binary @- \
    "$ELEPHANT_URL"{attest_path}
"""


def host_user_data(*, os: str, meeting_id: str, role: str, dcv_username: str, also_allowed: Sequence[str] = ()) -> str:
    """The first-boot script of one host (``os``: ``windows`` or ``linux``). ``also_allowed``: more user
    names with full access besides the owner (a warm-pool instance, built before it knows its role,
    lets both roles' names in)."""
    values = _values(meeting_id=meeting_id, role=role, dcv_username=dcv_username)
    extra = [name for name in dict.fromkeys(also_allowed) if name != dcv_username]
    if os == WINDOWS:
        quoted = {name: ps_quote(value, name) for name, value in values.items()}
        script = WINDOWS_TEMPLATE.format(
            **quoted,
            permissions_file=ps_quote(WINDOWS_PERMISSIONS_FILE),
            attest_path=ATTEST_PATH,
            extra_permissions="".join(f", {ps_quote(f'{name} allow builtin', 'a DCV user')}" for name in extra),
        )
    elif os == LINUX:
        quoted = {name: sh_quote(value, name) for name, value in values.items()}
        script = LINUX_TEMPLATE.format(
            **quoted,
            permissions_file=sh_quote(LINUX_PERMISSIONS_FILE),
            attest_path=sh_quote(ATTEST_PATH),
            extra_permissions="".join(
                f"printf '%s allow builtin\\n' {sh_quote(name, 'a DCV user')} >> \"$PERMISSIONS\"\n" for name in extra
            ),
        )
    else:
        raise UserDataError(f"unknown desktop OS {os!r}")
    if len(script.encode()) > USER_DATA_LIMIT:
        raise UserDataError("the boot script is longer than EC2's 16 KB user data limit")
    return script
