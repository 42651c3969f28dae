"""Play the host agents' part at a session's end (used with `make run`): upload a recording to the
local S3 bucket and write its address to the meeting's DynamoDB item, as the agents do.

    .venv/bin/python manage.py demo_recording <meeting id> [--role student|teacher|both]

The mirror's pull then stores it on the meeting, and the meeting page offers the download.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devtools.stack import RECORDINGS_BUCKET
from elephant.aws import aws_client
from meetings.models import Meeting, Role
from mirror import dynamo

SAMPLE = b"Elephant demo recording: the agents upload the session's recording here.\n"


class Command(BaseCommand):
    help = "Upload a demo recording for a meeting and write its S3 address where the agents write it (DynamoDB)."

    def add_arguments(self, parser):
        parser.add_argument("meeting_id")
        parser.add_argument("--role", choices=[*Role.values, "both"], default="both")

    def handle(self, *args, meeting_id, role, **options):
        if not Meeting.objects.filter(pk=meeting_id).exists():
            raise CommandError(f"no meeting {meeting_id!r}")
        s3 = aws_client("s3")
        for side in Role.values if role == "both" else [role]:
            key = f"{meeting_id}/{side}.txt"
            s3.put_object(Bucket=RECORDINGS_BUCKET, Key=key, Body=SAMPLE, ContentType="text/plain")
            address = f"s3://{RECORDINGS_BUCKET}/{key}"
            dynamo.ddb_client().update_item(
                TableName=settings.ELEPHANT_DDB_TABLE,
                Key={"id": {"S": meeting_id}},
                UpdateExpression="SET #data = :address",
                ExpressionAttributeNames={"#data": f"{side}_session_data"},
                ExpressionAttributeValues={":address": {"S": address}},
            )
            self.stdout.write(f"{side}: {address} (the mirror's next pull stores it on the meeting)")
