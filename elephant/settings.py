"""Elephant settings: one module, read from the environment, safe embedded defaults.

Development (the default, ``DJANGO_DEBUG`` unset or true) runs on SQLite and a local Redis
with no configuration at all. Production (``DJANGO_DEBUG=false``) refuses to start without
``DJANGO_SECRET_KEY`` and ``DJANGO_ALLOWED_HOSTS``.
"""

import json
from pathlib import Path

import dj_database_url

from elephant.email_url import email_settings
from elephant.env import env_bool, env_float, env_int, env_list, env_required, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", True)

if DEBUG:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key-elephant-do-not-use-in-production")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
else:
    SECRET_KEY = env_required("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        env_required("DJANGO_ALLOWED_HOSTS")

CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "meetings",
    "fleet",
    "mirror",
    "signalling",
    "notifications",
]
# Development tools (devtools/: the `make run` launcher, the DCV stand-in, the local set-up
# commands ensure_demo_users and fleet_local_setup) are installed only in development:
# ELEPHANT_DEV_TOOLS defaults to DJANGO_DEBUG, so a production start (DJANGO_DEBUG=false) never
# loads them unless an operator sets ELEPHANT_DEV_TOOLS=true on purpose. `make run` sets it.
ELEPHANT_DEV_TOOLS = env_bool("ELEPHANT_DEV_TOOLS", DEBUG)
if ELEPHANT_DEV_TOOLS:
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "elephant.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "elephant.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite unless DATABASE_URL is set -------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool per process (psycopg_pool), not persistent connections: under ASGI each
    # request runs its sync code on a thread of its own, so CONN_MAX_AGE leaks one connection
    # per request until PostgreSQL refuses more ("too many clients"; seen in bench/join.py).
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("ELEPHANT_DB_POOL_SIZE", 10),
        "timeout": env_float("ELEPHANT_DB_POOL_TIMEOUT_SECONDS", 10.0),
    }
    if env_bool("ELEPHANT_DB_PREPARED", False):
        # Parameters bound on the server, and a statement run this often on one connection prepared
        # there (psycopg's prepare_threshold): no quoting in Python, no parse and plan per run. Off by
        # default: a transaction-mode pooler in front of PostgreSQL (PgBouncer, RDS Proxy) breaks
        # prepared statements. The fleet simulator turns it on (docs/benchmarks.md, "Speed").
        DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = env_int("ELEPHANT_DB_PREPARE_THRESHOLD", 5, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache --------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("ELEPHANT_CACHE_PREFIX", "elephant"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults socket_timeout to 5 s, the same as channels-redis' blocking
            # BZPOPMIN (brpop_timeout = 5): an idle receive then raises TimeoutError and the
            # consumer dies with 1011. The read timeout must exceed the blocking pop.
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": env_float("ELEPHANT_REDIS_SOCKET_TIMEOUT", 15.0),
                    "socket_connect_timeout": 5,
                    "socket_keepalive": True,
                    "health_check_interval": 30,
                }
            ],
            "prefix": env_str("ELEPHANT_CHANNEL_PREFIX", "elephant"),
            "capacity": 1000,
            "expiry": 60,
            "group_expiry": 86400,
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- Auth, i18n, static ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "meetings:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# Daphne serves static files itself in development (the "daphne" app's runserver) and in
# `make run` through Django's static view; production puts a CDN or nginx in front.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # One line per message whatever a client sent (elephant/logs.py).
    "formatters": {
        "plain": {"()": "elephant.logs.OneLineFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}

# --- Elephant ---------------------------------------------------------------------------------
# Absolute base of the links Elephant hands out (join links, room links, DCV auth callback).
ELEPHANT_PUBLIC_URL = env_str("ELEPHANT_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# Access-Control-Allow-Origin on the join endpoint and the JSON API.
ELEPHANT_CORS_ORIGIN = env_str("ELEPHANT_CORS_ORIGIN", "*")

# Meeting lifecycle (minutes unless named otherwise).
ELEPHANT_LAUNCH_LEAD = env_int("ELEPHANT_LAUNCH_LEAD", 5)
ELEPHANT_OVERRUN_GRACE = env_int("ELEPHANT_OVERRUN_GRACE", 15)
ELEPHANT_SAFETY_NET_MINUTES = env_int("ELEPHANT_SAFETY_NET_MINUTES", 15)
ELEPHANT_HEALTH_TIMEOUT = env_int("ELEPHANT_HEALTH_TIMEOUT", 10)
ELEPHANT_JOIN_EARLY_MINUTES = env_int("ELEPHANT_JOIN_EARLY_MINUTES", 60)
ELEPHANT_PAST_TOLERANCE_MINUTES = env_int("ELEPHANT_PAST_TOLERANCE_MINUTES", 30)
ELEPHANT_MAX_DURATION_MINUTES = env_int("ELEPHANT_MAX_DURATION_MINUTES", 480)
# How far ahead a meeting can be scheduled (page, API and staff console alike).
ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS = env_int("ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS", 365)
# The longest weekly series one scheduling may create (form "Repeat weekly", API "repeat": {"weekly": N}).
ELEPHANT_MAX_SERIES_WEEKS = env_int("ELEPHANT_MAX_SERIES_WEEKS", 52)

# Readiness (issue 11, docs/fleet.md "Ready at the minute the lesson starts").
# "learned": each meeting's launch_at comes from the boot times its desktops have shown (fleet.readiness) and the
# launch planner (fleet.planner), and the health timeout from the same distribution; "fixed": the serverless
# design's meet_time - ELEPHANT_LAUNCH_LEAD and a fixed ELEPHANT_HEALTH_TIMEOUT.
ELEPHANT_LAUNCH_POLICY = env_str("ELEPHANT_LAUNCH_POLICY", "learned")
# The chance, per meeting, that both desktops are ready at meet_time.
ELEPHANT_READY_TARGET = env_float("ELEPHANT_READY_TARGET", 0.99)
# The lead plans for this share of the target's misses kept in reserve: at 0.5 it aims at 0.995 for a target of
# 0.99, so that the target holds over a week of lessons, not only on average (misses are random).
ELEPHANT_READY_MARGIN = env_float("ELEPHANT_READY_MARGIN", 0.5)
# What a new (AMI, type, zone, cold/warm) starts from, as "median,p95" seconds per OS and start; worth
# ELEPHANT_BOOT_PRIOR_WEIGHT boots. Boots ELEPHANT_BOOT_HALF_LIFE_DAYS old weigh half; older than
# ELEPHANT_BOOT_HISTORY_DAYS are not read.
ELEPHANT_BOOT_PRIOR = json.loads(
    env_str(
        "ELEPHANT_BOOT_PRIOR",
        '{"windows": {"cold": [420, 1200], "warm": [90, 300]}, "linux": {"cold": [60, 180], "warm": [40, 120]}}',
    )
)
ELEPHANT_BOOT_PRIOR_WEIGHT = env_float("ELEPHANT_BOOT_PRIOR_WEIGHT", 5.0)
ELEPHANT_BOOT_HALF_LIFE_DAYS = env_float("ELEPHANT_BOOT_HALF_LIFE_DAYS", 14.0)
ELEPHANT_BOOT_HISTORY_DAYS = env_int("ELEPHANT_BOOT_HISTORY_DAYS", 60)
# A host not healthy by this quantile of its own boot distribution is replaced, within floor and cap (minutes);
# the floor is ELEPHANT_HEALTH_TIMEOUT.
ELEPHANT_HEALTH_TIMEOUT_QUANTILE = env_float("ELEPHANT_HEALTH_TIMEOUT_QUANTILE", 0.999)
ELEPHANT_HEALTH_TIMEOUT_CAP = env_int("ELEPHANT_HEALTH_TIMEOUT_CAP", 60)
# The planner (fleet.planner): no meeting launches more than this before meet_time (minutes); meetings up to
# ELEPHANT_PLAN_HORIZON_HOURS ahead are planned together, every ELEPHANT_PLAN_SECONDS.
ELEPHANT_MAX_LAUNCH_LEAD = env_int("ELEPHANT_MAX_LAUNCH_LEAD", 240)
ELEPHANT_PLAN_HORIZON_HOURS = env_int("ELEPHANT_PLAN_HORIZON_HOURS", 24)
ELEPHANT_PLAN_SECONDS = env_int("ELEPHANT_PLAN_SECONDS", 60)
# The account's EC2 limits in this region: the RunInstances and StartInstances resource buckets (EC2 API
# throttling: 1,000 instances, refilled at 2 a second, by default), the share of their refill the plan may
# use (the rest stays free for replacements and late bookings), and the running-vCPU quota per instance
# family as JSON {"g": 2000, ...} (Service Quotas' "Running On-Demand G and VT instances" and friends).
# An empty quota is read from Service Quotas where it answers, and is otherwise unlimited.
ELEPHANT_RUN_INSTANCES_PER_SECOND = env_float("ELEPHANT_RUN_INSTANCES_PER_SECOND", 2.0)
ELEPHANT_START_INSTANCES_PER_SECOND = env_float("ELEPHANT_START_INSTANCES_PER_SECOND", 2.0)
ELEPHANT_PLAN_BUCKET_SHARE = env_float("ELEPHANT_PLAN_BUCKET_SHARE", 0.8)
ELEPHANT_VCPU_QUOTA = json.loads(env_str("ELEPHANT_VCPU_QUOTA", "{}"))
ELEPHANT_SERVICE_QUOTAS = env_bool("ELEPHANT_SERVICE_QUOTAS", True)
# The warm pool (fleet.pool): per desktop profile, stopped instances that booted fully once, started for a
# meeting instead of a cold launch. Off by default. Sized to the hosts of the meetings starting within
# ELEPHANT_WARM_POOL_HORIZON_HOURS plus ELEPHANT_WARM_POOL_SPARE, at most ELEPHANT_WARM_POOL_MAX per profile;
# a stopped instance older than ELEPHANT_WARM_POOL_MAX_AGE_HOURS is replaced (AMI patches reach the pool).
ELEPHANT_WARM_POOL = env_bool("ELEPHANT_WARM_POOL", False)
ELEPHANT_WARM_POOL_HORIZON_HOURS = env_float("ELEPHANT_WARM_POOL_HORIZON_HOURS", 6.0)
ELEPHANT_WARM_POOL_SPARE = env_int("ELEPHANT_WARM_POOL_SPARE", 2)
ELEPHANT_WARM_POOL_MAX = env_int("ELEPHANT_WARM_POOL_MAX", 500)
ELEPHANT_WARM_POOL_MAX_AGE_HOURS = env_float("ELEPHANT_WARM_POOL_MAX_AGE_HOURS", 72.0)
# Prices the admin's cost figures use (USD per instance-hour running, and per hour a stopped instance's volume).
ELEPHANT_USD_PER_HOUR = env_float("ELEPHANT_USD_PER_HOUR", 0.71)
ELEPHANT_STOPPED_USD_PER_HOUR = env_float("ELEPHANT_STOPPED_USD_PER_HOUR", 0.01)

# AWS (boto3). AWS_ENDPOINT_URL points every client at a local endpoint (moto server).
AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-west-2"))
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL", "") or None
ELEPHANT_AMI_ID = env_str("ELEPHANT_AMI_ID", "")
# One GPU vendor per list (one AMI carries one driver): fleet.aws.launch_config_problems checks it.
ELEPHANT_INSTANCE_TYPES = env_list("ELEPHANT_INSTANCE_TYPES", ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"])
ELEPHANT_KEY_NAME = env_str("ELEPHANT_KEY_NAME", "")
ELEPHANT_SECURITY_GROUP_IDS = env_list("ELEPHANT_SECURITY_GROUP_IDS", [])
ELEPHANT_SUBNET_IDS = env_list("ELEPHANT_SUBNET_IDS", [])
ELEPHANT_AVAILABILITY_ZONES = env_list("ELEPHANT_AVAILABILITY_ZONES", [])
ELEPHANT_INSTANCE_PROFILE = env_str("ELEPHANT_INSTANCE_PROFILE", "")
# Request a public IPv4 address for each host (and put only that one in DNS); false for private subnets.
ELEPHANT_PUBLIC_IP = env_bool("ELEPHANT_PUBLIC_IP", True)
# The ElephantDeployment tag on everything the fleet creates; the reaper and watchdog touch only their own.
ELEPHANT_DEPLOYMENT = env_str("ELEPHANT_DEPLOYMENT", "local")
ELEPHANT_VOLUME_SIZE_GB = env_int("ELEPHANT_VOLUME_SIZE_GB", 60)
ELEPHANT_DNS_ZONE_ID = env_str("ELEPHANT_DNS_ZONE_ID", "")
ELEPHANT_DNS_DOMAIN = env_str("ELEPHANT_DNS_DOMAIN", "desktops.example.com")
ELEPHANT_DCV_URL_TEMPLATE = env_str("ELEPHANT_DCV_URL_TEMPLATE", "https://{instance_id}.{domain}:8443")
ELEPHANT_DCV_SESSION_ID = env_str("ELEPHANT_DCV_SESSION_ID", "console")
ELEPHANT_DCV_TOKEN_TTL_SECONDS = env_int("ELEPHANT_DCV_TOKEN_TTL_SECONDS", 120)
ELEPHANT_PROBE_TIMEOUT_SECONDS = env_float("ELEPHANT_PROBE_TIMEOUT_SECONDS", 3.0)
ELEPHANT_PROBE_VERIFY_TLS = env_bool("ELEPHANT_PROBE_VERIFY_TLS", False)
ELEPHANT_SIM_BOOT_SECONDS = env_int("ELEPHANT_SIM_BOOT_SECONDS", 10)
ELEPHANT_SWEEP_SECONDS = env_int("ELEPHANT_SWEEP_SECONDS", 15)
# Fleet (README "Fleet"): the one AWS retry policy, the reaper, the DCV user name.
# One retry policy for every AWS client (elephant.aws): botocore's mode and attempts per call.
ELEPHANT_AWS_RETRY_MODE = env_str("ELEPHANT_AWS_RETRY_MODE", "standard")
ELEPHANT_AWS_MAX_ATTEMPTS = env_int("ELEPHANT_AWS_MAX_ATTEMPTS", 5)
ELEPHANT_REAPER_SECONDS = env_int("ELEPHANT_REAPER_SECONDS", 60)
ELEPHANT_REAPER_GRACE_MINUTES = env_int("ELEPHANT_REAPER_GRACE_MINUTES", 15)
ELEPHANT_DCV_USERNAME = env_str("ELEPHANT_DCV_USERNAME", "")
# The region's public AWS certificate (RSA, for the base64 `signature` form) that host attestations are verified
# against (fleet.attest): a PEM, or the path of one. Empty: no host can attest.
ELEPHANT_AWS_IDENTITY_CERT = env_str("ELEPHANT_AWS_IDENTITY_CERT", "")

# DynamoDB mirror.
ELEPHANT_DDB_TABLE = env_str("ELEPHANT_DDB_TABLE", "elephant-meetings")
ELEPHANT_DDB_FLUSH_SECONDS = env_int("ELEPHANT_DDB_FLUSH_SECONDS", 30)  # beat sweep of the outbox
ELEPHANT_DDB_PULL_SECONDS = env_int("ELEPHANT_DDB_PULL_SECONDS", 15)  # beat pull of agent attributes
ELEPHANT_DDB_FLUSH_DELAY_SECONDS = env_float("ELEPHANT_DDB_FLUSH_DELAY_SECONDS", 1.0)  # on-commit coalescing window
ELEPHANT_DDB_FLUSH_BATCH = env_int("ELEPHANT_DDB_FLUSH_BATCH", 500)  # meetings per flush pass
ELEPHANT_DDB_RETRY_BASE_SECONDS = env_int("ELEPHANT_DDB_RETRY_BASE_SECONDS", 5)
ELEPHANT_DDB_RETRY_MAX_SECONDS = env_int("ELEPHANT_DDB_RETRY_MAX_SECONDS", 300)
ELEPHANT_DDB_TIMEOUT_SECONDS = env_float("ELEPHANT_DDB_TIMEOUT_SECONDS", 5.0)

# Signalling (README "Signalling").
ELEPHANT_ROOM_CAPACITY = env_int("ELEPHANT_ROOM_CAPACITY", 4)  # teacher + student + 2 staff observers
ELEPHANT_SIGNALLING_MAX_MESSAGE_BYTES = env_int("ELEPHANT_SIGNALLING_MAX_MESSAGE_BYTES", 128 * 1024)
ELEPHANT_SIGNALLING_RATE_PER_SECOND = env_float("ELEPHANT_SIGNALLING_RATE_PER_SECOND", 50.0)
ELEPHANT_SIGNALLING_RATE_BURST = env_int("ELEPHANT_SIGNALLING_RATE_BURST", 200)
ELEPHANT_SIGNALLING_AUTH_FAILURES = env_int("ELEPHANT_SIGNALLING_AUTH_FAILURES", 3)
ELEPHANT_SIGNALLING_IDLE_SECONDS = env_int("ELEPHANT_SIGNALLING_IDLE_SECONDS", 60)
# A new socket must join a room or subscribe within this time (close 4408); no frame extends it.
ELEPHANT_SIGNALLING_JOIN_SECONDS = env_float("ELEPHANT_SIGNALLING_JOIN_SECONDS", 10.0)
# Open sockets per web process and per client address (behind a proxy: daphne --proxy-headers); over: close 4429.
ELEPHANT_SIGNALLING_MAX_SOCKETS = env_int("ELEPHANT_SIGNALLING_MAX_SOCKETS", 10000)
ELEPHANT_SIGNALLING_MAX_SOCKETS_PER_ADDRESS = env_int("ELEPHANT_SIGNALLING_MAX_SOCKETS_PER_ADDRESS", 100)
ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS = env_float("ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS", 6.0)
ELEPHANT_ICE_SERVERS = json.loads(env_str("ELEPHANT_ICE_SERVERS", '[{"urls": ["stun:stun.l.google.com:19302"]}]'))

# Participant pages (README "The pages people use").
ELEPHANT_AUTO_REDIRECT = env_bool("ELEPHANT_AUTO_REDIRECT", True)  # waiting room opens the desktop by itself
# TURN for the video room, coturn REST-API style (use-auth-secret): each participant gets its own
# credential that expires after ELEPHANT_TURN_TTL_SECONDS. Unset secret or URLs: STUN only.
ELEPHANT_TURN_SECRET = env_str("ELEPHANT_TURN_SECRET", "")
ELEPHANT_TURN_URLS = env_list("ELEPHANT_TURN_URLS", [])
ELEPHANT_TURN_TTL_SECONDS = env_int("ELEPHANT_TURN_TTL_SECONDS", 3600)

# Mail to the participants (docs/pages.md "Mail"): smtp://, smtp+tls://, smtps:// or console: (printed by the worker).
globals().update(email_settings(env_str("DJANGO_EMAIL_URL", "console:")))
DEFAULT_FROM_EMAIL = env_str("ELEPHANT_MAIL_FROM", "Elephant <elephant@localhost>")
ELEPHANT_REMINDER_MINUTES = env_int("ELEPHANT_REMINDER_MINUTES", 15)
ELEPHANT_MAIL_SWEEP_SECONDS = env_int("ELEPHANT_MAIL_SWEEP_SECONDS", 60)  # beat: lost mail and due reminders

# Recordings: the session data the agents upload, offered as presigned S3 links minted per page view.
ELEPHANT_RECORDING_LINK_SECONDS = env_int("ELEPHANT_RECORDING_LINK_SECONDS", 300)
