"""Superset's configuration for yiwang's analysts (loaded by Superset through SUPERSET_CONFIG_PATH).

It runs inside Superset's own virtual environment (`.venv-superset`), so it imports nothing of yiwang: every
machine-specific value comes from the environment that `yiwang superset start` sets (orchestration/superset_cli.py):

- SUPERSET_SECRET_KEY: generated once into `<home>/superset/secret_key` (never committed);
- SUPERSET_HOME: `<home>/superset`, where the metadata database (SQLite) and the caches live;
- YIWANG_SUPERSET_LOCALE: the interface language (zh by default, en available).

Superset reads the published DuckDB file read-only, with DuckDB's file access switched off (the database's
`extra` in the asset bundle), so SQL Lab cannot reach the warehouse's restricted files through DuckDB.
"""

import os
from datetime import timedelta

SUPERSET_HOME = os.environ["SUPERSET_HOME"]
SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = f"sqlite:///{os.path.join(SUPERSET_HOME, 'superset.db')}?check_same_thread=false"
# SQLite as the metadata store: one analyst team on one machine, writes are rare (saving a chart).
SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"timeout": 30}}

APP_NAME = "一网统管 分析"
BABEL_DEFAULT_LOCALE = os.environ.get("YIWANG_SUPERSET_LOCALE", "zh")
LANGUAGES = {"zh": {"flag": "cn", "name": "Chinese"}, "en": {"flag": "us", "name": "English"}}

# Query results are cached on disk, shared by the web workers: the warm figures of bench/superset.py are these.
# The published file is replaced after each platform run; results older than a day are not served.
_DAY = int(timedelta(days=1).total_seconds())
CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": os.path.join(SUPERSET_HOME, "cache", "objects"),
    "CACHE_DEFAULT_TIMEOUT": _DAY,
    "CACHE_KEY_PREFIX": "yiwang_",
}
DATA_CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": os.path.join(SUPERSET_HOME, "cache", "data"),
    "CACHE_DEFAULT_TIMEOUT": _DAY,
    "CACHE_KEY_PREFIX": "yiwang_data_",
}

# Served on 127.0.0.1 over plain HTTP: no HTTPS redirect; the rate limiter keeps its counts in memory. Nothing is
# compressed (on loopback it costs the 2 cores more than it saves: about a second per cold dashboard).
RATELIMIT_STORAGE_URI = "memory://"
SESSION_COOKIE_SECURE = False
COMPRESS_REGISTER = False
ENABLE_CORS = False  # Superset's default lets map-tile origins call it; nothing but its own pages does here

# The browser may load nothing from outside: Superset's own files only. This blocks its telemetry pixel
# (apachesuperset.gateway.scarf.sh, on every page) and any map tile or web font: the platform runs offline and
# tells no one what its analysts look at.
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
WTF_CSRF_ENABLED = True

# Nothing uploaded, nothing written: analysts read the published gold layer.
PREVENT_UNSAFE_DB_CONNECTIONS = True
FEATURE_FLAGS = {
    "DASHBOARD_RBAC": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
    "TAGGING_SYSTEM": False,
    "THUMBNAILS": False,
    "ALERT_REPORTS": False,
}
ROW_LIMIT = 50_000
SQL_MAX_ROW = 100_000
SUPERSET_WEBSERVER_TIMEOUT = 120
# Times in the published file are already China Standard Time (see thematic_libs/analytics/publish.py).
DEFAULT_TIME_FILTER = "No filter"

LOG_LEVEL = "INFO"
