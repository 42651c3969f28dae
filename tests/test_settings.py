"""Settings come from the environment; production refuses to start half-configured."""

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k3y-" + "x9Zq4Lm2Vb7Tn1Rw8Yc5Hd0Jf6Gs3Ka" * 2,
    "DJANGO_ALLOWED_HOSTS": "elephant.example.com",
    "DATABASE_URL": "postgres://elephant@db.internal:5432/elephant",
    "REDIS_URL": "redis://cache.internal:6379/0",
}


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ELEPHANT_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=clean | env, capture_output=True, text=True, timeout=60
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", env={k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = manage("check", env={k: v for k, v in PRODUCTION.items() if k != "DJANGO_ALLOWED_HOSTS"})
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must be set" in result.stderr


def test_deploy_check_is_clean_in_a_production_like_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_bad_values_are_named():
    result = manage("check", env={"ELEPHANT_LAUNCH_LEAD": "five"})
    assert result.returncode != 0
    assert "ELEPHANT_LAUNCH_LEAD must be a whole number" in result.stderr


def test_a_negative_prepare_threshold_is_named():
    env = {"DATABASE_URL": PRODUCTION["DATABASE_URL"], "ELEPHANT_DB_PREPARED": "true"}
    result = manage("check", env=env | {"ELEPHANT_DB_PREPARE_THRESHOLD": "-1"})
    assert result.returncode != 0
    assert "ELEPHANT_DB_PREPARE_THRESHOLD must be 0 or more, not -1" in result.stderr


def test_database_url_selects_postgresql_and_default_is_sqlite():
    code = "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    run = lambda env: subprocess.run(  # noqa: E731
        [
            sys.executable,
            "-c",
            "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'elephant.settings'); "
            f"django.setup(); {code}",
        ],
        cwd=BASE_DIR,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run({}).stdout.strip() == "django.db.backends.sqlite3"
    assert run({"DATABASE_URL": PRODUCTION["DATABASE_URL"]}).stdout.strip() == "django.db.backends.postgresql"


def test_prepared_statements_are_off_by_default_and_a_setting_turns_them_on(require_postgres):
    """ELEPHANT_DB_PREPARED binds parameters on the server and prepares a statement a connection runs
    often (docs/operations.md): PostgreSQL itself lists the prepared statement, and without the setting
    it lists none (a transaction-mode pooler in front would break them)."""
    from urllib.parse import urlsplit

    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    url = parts._replace(path=f"/{connection.settings_dict['NAME']}").geturl()
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'elephant.settings'); django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    for _ in range(6):\n"
        "        cursor.execute('SELECT count(*) FROM pg_class WHERE relname = %s', ['pg_class'])\n"
        "    cursor.execute('SELECT count(*) FROM pg_prepared_statements')\n"
        "    print(cursor.fetchone()[0])\n"
    )

    def prepared(env: dict) -> int:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ELEPHANT_DB_")}
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=BASE_DIR,
            env=clean | {"DATABASE_URL": url} | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    assert prepared({}) == 0
    assert prepared({"ELEPHANT_DB_PREPARED": "true"}) >= 1
    assert prepared({"ELEPHANT_DB_PREPARED": "true", "ELEPHANT_DB_PREPARE_THRESHOLD": "10"}) == 0
