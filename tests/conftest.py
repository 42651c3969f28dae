import os

import pytest
from django.db import connection


def pytest_collection_modifyitems(config, items):
    # Integration tests never skip silently in CI.
    if os.environ.get("CI", "").lower() == "true":
        config.option.reportchars = "a"


@pytest.fixture
def require_postgres(db):
    if connection.vendor != "postgresql":
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("This test needs PostgreSQL (DATABASE_URL) and CI=true forbids skipping it")
        pytest.skip("needs PostgreSQL: set DATABASE_URL")


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty cache (rate limits, spent DCV tokens) in the test Redis db."""
    from django.core.cache import cache

    from fleet.aws import image_root_device_forget
    from fleet.services.planning import boot_model_forget

    cache.clear()
    boot_model_forget()
    image_root_device_forget()
    yield


@pytest.fixture(autouse=True)
def _aws_backoff_frozen(monkeypatch):
    """botocore's retry policy runs as configured (modes, attempts, quota), without its sleeps."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
