"""Prepare the local AWS endpoint (moto server) for `make run` and the end-to-end tests.

Registers a stand-in AMI (``elephant-dcv-local``) and a Route 53 zone for
``ELEPHANT_DNS_DOMAIN`` when the settings name none, and prints what it made as
``NAME=value`` lines for the run command to put in the processes' environment. Idempotent.
It refuses to run without ``AWS_ENDPOINT_URL``: it is a development tool, never a step
against a real account.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from elephant.aws import aws_call
from fleet.aws import ec2_client, route53_client

LOCAL_AMI_NAME = "elephant-dcv-local"


class Command(BaseCommand):
    help = "Register a stand-in AMI and DNS zone in the local AWS endpoint; print them as NAME=value lines."

    def handle(self, *args, **options):
        if not settings.AWS_ENDPOINT_URL:
            raise CommandError("fleet_local_setup only prepares a local endpoint: set AWS_ENDPOINT_URL.")
        found = {}
        if not settings.ELEPHANT_AMI_ID:
            found["ELEPHANT_AMI_ID"] = self._ami()
        if not settings.ELEPHANT_DNS_ZONE_ID:
            found["ELEPHANT_DNS_ZONE_ID"] = self._zone()
        for name, value in found.items():
            self.stdout.write(f"{name}={value}")

    def _ami(self) -> str:
        ec2 = ec2_client()
        images = aws_call(ec2.describe_images, Owners=["self"], Filters=[{"Name": "name", "Values": [LOCAL_AMI_NAME]}])[
            "Images"
        ]
        if images:
            return images[0]["ImageId"]
        return aws_call(
            ec2.register_image,
            Name=LOCAL_AMI_NAME,
            Description="Stand-in for the DCV host image (local endpoint only)",
            Architecture="x86_64",
            RootDeviceName="/dev/sda1",
            VirtualizationType="hvm",
        )["ImageId"]

    def _zone(self) -> str:
        route53 = route53_client()
        domain = settings.ELEPHANT_DNS_DOMAIN.rstrip(".") + "."
        zones = aws_call(route53.list_hosted_zones_by_name, DNSName=domain)["HostedZones"]
        for zone in zones:
            if zone["Name"] == domain:
                return zone["Id"].split("/")[-1]
        created = aws_call(route53.create_hosted_zone, Name=domain, CallerReference=f"elephant-{domain}")
        return created["HostedZone"]["Id"].split("/")[-1]
