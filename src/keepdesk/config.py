"""Settings, declared once: defaults < `config.toml` < `KEEPDESK_*` environment < CLI flags.

The TOML file groups settings in tables (`[database] url = ...`); a setting's flat name joins the
table and the key (`database_url`), which is also its environment name (`KEEPDESK_DATABASE_URL`).
Nothing here runs at import time: the CLI calls `load_settings()` and passes the result down.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from keepdesk.errors import ConfigError

# The TOML tables; a flat setting name starts with one of these and an underscore.
SECTIONS = (
    "server",
    "database",
    "auth",
    "api",
    "tickets",
    "mail",
    "backup",
    "log",
    "workers",
)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEPDESK_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path("keepdesk-data"),
        description="Where the SQLite database, the blob store (attachments, raw mail) and the "
        "generated instance secret live. Created on first start.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Instance secret for signing and encrypting. When unset, one is generated "
        "into <data_dir>/secret_key on first start; set it explicitly when several instances "
        "share one database.",
    )

    server_host: str = Field("127.0.0.1", description="Address `keepdesk serve` listens on.")
    server_port: int = Field(8000, ge=1, le=65535, description="Port `keepdesk serve` listens on.")
    server_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes `keepdesk serve` answers requests with, on one port. One serves "
        "at most one core's worth of requests; on a busy instance set this to the number of "
        "cores. The first process also runs the background work.",
    )
    server_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="The public URL agents and customers reach keepdesk at; every link keepdesk "
        "builds uses it, never the request's Host header.",
    )

    server_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
        'are believed (e.g. ["127.0.0.1"]). Empty: no forwarded header is trusted, and the '
        "sign-in throttle sees the proxy's address.",
    )

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite in <data_dir>/keepdesk.sqlite3. PostgreSQL: "
        "postgresql+asyncpg://user:password@host:5432/keepdesk",
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="PostgreSQL only: connections per process."
    )
    database_sqlite_pool_size: int = Field(
        2,
        ge=1,
        le=64,
        description="SQLite only: connections per process. Each runs on a thread of its own; "
        "more than two mostly contend for Python's GIL (docs/benchmarks.md).",
    )
    database_busy_timeout_ms: int = Field(
        10_000, ge=0, le=600_000, description="SQLite only: how long a writer waits for the lock."
    )
    database_echo: bool = Field(False, description="Log every SQL statement (debugging only).")

    auth_session_idle_minutes: int = Field(
        8 * 60, ge=5, description="A browser session ends after this long without use."
    )
    auth_session_max_days: int = Field(
        14, ge=1, description="A browser session ends this long after sign-in, used or not."
    )
    auth_max_failures_per_account: int = Field(
        5,
        ge=1,
        description="Failed sign-ins for one account within the window before it is throttled.",
    )
    auth_max_failures_per_ip: int = Field(
        30,
        ge=1,
        description="Failed sign-ins from one IP address within the window before it is throttled.",
    )
    auth_throttle_minutes: int = Field(
        15, ge=1, description="The throttle window, and how long a throttled account or IP waits."
    )

    api_page_size: int = Field(25, ge=1, le=500, description="Default `limit` of list endpoints.")
    api_max_page_size: int = Field(100, ge=1, le=1000, description="Largest `limit` accepted.")

    tickets_first_number: int = Field(
        1000, ge=1, le=1_000_000_000, description="The number the first ticket gets."
    )
    tickets_max_attachment_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest single attachment accepted."
    )
    tickets_auto_close_days: int = Field(
        7,
        ge=0,
        description="Resolved tickets close after this many days without a customer "
        "reply; 0 never closes them.",
    )

    mail_send_timeout_seconds: float = Field(
        60.0,
        ge=1,
        # An outbox claim lasts 5 minutes (outbox.service.CLAIM_TTL); a send must end well
        # within it, or another sender could take the row while it is still being sent.
        le=240,
        description="The longest one attempt to hand a mail to the SMTP server may take, from "
        "connecting to the server's answer. A timeout before the message is sent is retried; "
        "one after it marks the delivery uncertain.",
    )

    mail_imap_timeout_seconds: float = Field(
        30.0,
        ge=1,
        description="How long keepdesk waits for any one answer of the IMAP server (connecting, "
        "a FETCH, a MOVE) before it gives up on the pass and tries again later.",
    )
    mail_fetch_batch: int = Field(
        20,
        ge=1,
        le=100,
        description="Fetched mails recorded in one database transaction, then moved on the IMAP "
        "server together. More is faster in a burst of mail; on SQLite, agents' writes wait for "
        "each such transaction (about 2 ms a mail). Each mail keeps its own retries and "
        "quarantine. 1 records and moves each mail on its own.",
    )

    mail_authserv_id: str | None = Field(
        None,
        description="The authserv-id your own mail server writes in Authentication-Results "
        "(e.g. mx.example.com). Only the top-most such header is trusted (RFC 8601); mail whose "
        "DMARC result there is not pass is shown as 'sender not verified'. Unset: not checked.",
    )
    mail_max_message_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Larger mail is quarantined before download."
    )
    mail_max_headers: int = Field(1000, ge=10, description="Header fields per message.")
    mail_max_header_bytes: int = Field(64 * 1024, ge=1024, description="Bytes in one header.")
    mail_max_depth: int = Field(50, ge=2, description="MIME nesting levels.")
    mail_max_parts: int = Field(1000, ge=1, description="MIME parts per message.")
    mail_max_cpu_seconds: float = Field(
        30.0, gt=0, description="CPU time parsing one message may take."
    )
    mail_parse_processes: int = Field(
        2,
        ge=0,
        le=32,
        description="Worker processes that parse incoming mail, so the parse's CPU (about a "
        "millisecond a mail, more for a hostile one) runs beside the process that records mail "
        "and serves agents instead of in it. 0 parses in a thread of that process.",
    )

    backup_every_hours: int = Field(
        24,
        ge=0,
        le=24 * 30,
        description="Take a verified backup this often; 0 turns scheduled backups off.",
    )
    backup_dir: Path | None = Field(
        None, description="Where scheduled backups go. Default: <data_dir>/backups."
    )
    backup_keep: int = Field(
        7,
        ge=1,
        le=1000,
        description="How many scheduled backups to keep; the newest verified one is never deleted.",
    )
    backup_public_key: str | None = Field(
        None,
        description="Encrypt scheduled backups for this key (from 'keepdesk backup "
        "keygen'); the private key stays off the server. Weekly restore drills then need it "
        "and are skipped.",
    )

    log_level: LogLevel = Field(LogLevel.info, description="debug, info, warning or error.")
    log_format: LogFormat = Field(LogFormat.text, description="text (for people) or json.")

    workers_enabled: bool = Field(
        True, description="Run background work (mail, outbox, housekeeping) inside `serve`."
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("must be a URL like postgresql+asyncpg://user@host/db")
        drivers = {
            "sqlite": "sqlite+aiosqlite",
            "sqlite+aiosqlite": "sqlite+aiosqlite",
            "postgresql": "postgresql+asyncpg",
            "postgres": "postgresql+asyncpg",
            "postgresql+asyncpg": "postgresql+asyncpg",
        }
        if scheme not in drivers:
            raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")
        return f"{drivers[scheme]}://{rest}"

    @field_validator("server_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or value.endswith("://"):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keepdesk.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def backups_dir(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def env_name(field: str) -> str:
    return f"KEEPDESK_{field.upper()}"


def toml_name(field: str) -> str:
    section, _, key = field.partition("_")
    if section in SECTIONS and key:
        return f"[{section}] {key}"
    return field


class _MappingSource(PydanticBaseSettingsSource):
    """Feeds the flattened `config.toml` into pydantic-settings below the environment."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _flatten(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{path}: unknown table [{key}]")
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    return flat


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return _flatten(tomllib.load(f), path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Read the configuration; raise `ConfigError` with one readable line when it is wrong.

    `config_path` falls back to `KEEPDESK_CONFIG`; `overrides` are CLI flags and beat everything.
    """
    if config_path is None and os.environ.get("KEEPDESK_CONFIG"):
        config_path = Path(os.environ["KEEPDESK_CONFIG"])
    file_data = _read_toml(config_path) if config_path else {}
    source = str(config_path) if config_path else "config"
    overrides = {k: v for k, v in overrides.items() if v is not None}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _MappingSource(settings_cls, file_data))

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown setting {toml_name(field)}") from None
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"bad setting {toml_name(field)} (env {env_name(field)}): {message}"
        ) from None


# KEEPDESK_* variables that are not settings but are read by keepdesk or its tools.
_OTHER_VARIABLES = (
    "KEEPDESK_CONFIG",
    "KEEPDESK_FAULT",
    "KEEPDESK_ADMIN_",
    "KEEPDESK_TEST_",
    "KEEPDESK_BENCH_",
)


def unknown_environment() -> list[str]:
    """KEEPDESK_* variables that name no setting: most likely typos, which would be ignored."""
    known = {env_name(name) for name in Settings.model_fields}
    return sorted(
        name
        for name in os.environ
        if name.startswith("KEEPDESK_")
        and name not in known
        and not name.startswith(_OTHER_VARIABLES)
    )


def instance_secret(settings: Settings) -> bytes:
    """The configured secret, or the one generated into the data directory on first use."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value().encode()
        if len(value) < 32:
            raise ConfigError(
                "bad setting secret_key (env KEEPDESK_SECRET_KEY): use 32+ characters"
            )
        return value
    path = settings.data_dir / "secret_key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    # O_EXCL: two processes starting together must not end up with two secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return value
