from django.core.management.base import BaseCommand

from mirror.dynamo import table_bootstrap


class Command(BaseCommand):
    help = "Create the DynamoDB table (on-demand, streams with new and old images) where missing. Safe to rerun."

    def handle(self, *args, **options):
        self.stdout.write(table_bootstrap())
