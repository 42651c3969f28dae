from django.core.management.base import BaseCommand, CommandError

from meetings.models import Meeting
from mirror.services import mirror_backlog, mirror_flush, mirror_resync


class Command(BaseCommand):
    help = (
        "Write meetings to DynamoDB again: queue them in the mirror's outbox, then flush it here "
        "(use --no-flush to leave the writing to the worker)."
    )

    def add_arguments(self, parser):
        parser.add_argument("meeting_ids", nargs="*", metavar="MEETING_ID")
        parser.add_argument("--all", action="store_true", help="every meeting in the database")
        parser.add_argument("--no-flush", action="store_true", help="only queue; the worker writes them")

    def handle(self, *args, meeting_ids, no_flush, **options):
        every = options["all"]
        if every == bool(meeting_ids):
            raise CommandError("Give meeting ids or --all (not both).")
        if meeting_ids:
            known = set(Meeting.objects.filter(pk__in=meeting_ids).values_list("pk", flat=True))
            unknown = sorted(set(meeting_ids) - known)
            if unknown:
                raise CommandError(f"Unknown meeting id(s): {', '.join(unknown)}")
        queued = mirror_resync(meeting_ids=None if every else meeting_ids, actor="command:ddb_resync")
        self.stdout.write(f"queued {queued} meeting(s)")
        if no_flush:
            return
        written = failed = 0
        while True:
            result = mirror_flush(meeting_ids=None if every else meeting_ids)
            written += result.written
            failed += result.failed
            if result.unavailable or not result.claimed:
                break
        backlog = mirror_backlog()
        self.stdout.write(f"written {written}, failed {failed}; backlog now {backlog.changes} change(s)")
        if backlog.last_error:
            self.stdout.write(f"last error ({backlog.last_error_meeting_id}): {backlog.last_error}")
        if failed:
            raise CommandError(f"{failed} write(s) failed; they stay queued and the worker retries them")
