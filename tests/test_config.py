"""Settings: defaults, where each value comes from, and one readable line for every mistake."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keepdesk.config import Settings, instance_secret, load_settings
from keepdesk.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_listen_on_loopback_and_keep_sqlite_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.server_host, settings.server_port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("keepdesk-data")
    assert settings.database_url is None
    assert settings.is_sqlite
    expected = tmp_path.resolve() / "keepdesk-data" / "keepdesk.sqlite3"
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{expected}"


def test_file_then_environment_then_flags_each_win_over_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, '[server]\nport = 8001\nhost = "10.1.2.3"\n')
    from_file = load_settings(config)
    assert (from_file.server_port, from_file.server_host) == (8001, "10.1.2.3")

    monkeypatch.setenv("KEEPDESK_SERVER_PORT", "8002")
    from_env = load_settings(config)
    assert (from_env.server_port, from_env.server_host) == (8002, "10.1.2.3")

    from_flag = load_settings(config, server_port=8003, server_host=None)
    assert (from_flag.server_port, from_flag.server_host) == (8003, "10.1.2.3")


def test_keepdesk_config_names_the_file_when_no_path_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, '[log]\nlevel = "debug"\n')
    monkeypatch.setenv("KEEPDESK_CONFIG", str(config))
    assert load_settings().log_level == "debug"


def test_database_table_url_is_the_database_url_setting(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[database]\nurl = "postgresql+asyncpg://kd@db/keepdesk"\n')
    settings = load_settings(config)
    assert settings.database_url == "postgresql+asyncpg://kd@db/keepdesk"
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[colours]\nbackground = "x"\n', "unknown table [colours]"),
        ('[server]\ncolour = "blue"\n', "unknown setting [server] colour"),
        ('colour = "blue"\n', "unknown setting colour"),
    ],
)
def test_unknown_tables_and_keys_are_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert named in str(caught.value)
    assert str(config) in str(caught.value)


def test_a_config_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "is not valid TOML" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("source", "value", "setting", "env"),
    [
        ("env", "eighty", "[server] port", "KEEPDESK_SERVER_PORT"),
        ("env", "70000", "[server] port", "KEEPDESK_SERVER_PORT"),
        ("env", "loud", "[log] level", "KEEPDESK_LOG_LEVEL"),
        (
            "file",
            "[auth]\nsession_idle_minutes = 1\n",
            "[auth] session_idle_minutes",
            "KEEPDESK_AUTH_SESSION_IDLE_MINUTES",
        ),
        (
            "file",
            '[server]\nbase_url = "ftp://x"\n',
            "[server] base_url",
            "KEEPDESK_SERVER_BASE_URL",
        ),
        ("flag", "0", "[server] port", "KEEPDESK_SERVER_PORT"),
    ],
)
def test_a_bad_value_names_the_setting_and_its_environment_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    value: str,
    setting: str,
    env: str,
) -> None:
    config = None
    overrides: dict[str, object] = {}
    if source == "env":
        monkeypatch.setenv(env, value)
    elif source == "file":
        config = write_config(tmp_path, value)
    else:
        overrides["server_port"] = int(value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, **overrides)
    message = str(caught.value)
    assert message.startswith(f"bad setting {setting} (env {env}): ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("postgresql://kd:pw@db:5432/keepdesk", "postgresql+asyncpg://kd:pw@db:5432/keepdesk"),
        ("postgres://kd@db/keepdesk", "postgresql+asyncpg://kd@db/keepdesk"),
        ("postgresql+asyncpg://kd@db/keepdesk", "postgresql+asyncpg://kd@db/keepdesk"),
        ("sqlite:////srv/keepdesk.sqlite3", "sqlite+aiosqlite:////srv/keepdesk.sqlite3"),
        ("sqlite+aiosqlite:///kd.sqlite3", "sqlite+aiosqlite:///kd.sqlite3"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, stored: str) -> None:
    assert load_settings(database_url=given).database_url == stored


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://kd@db/keepdesk", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://kd@db/keepdesk", "unsupported database 'postgresql+psycopg2'"),
        ("keepdesk.sqlite3", "must be a URL"),
    ],
)
def test_unsupported_databases_are_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("KEEPDESK_DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("bad setting [database] url (env KEEPDESK_DATABASE_URL)")
    assert reason in str(caught.value)


def test_instance_secret_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    first = instance_secret(settings)
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert instance_secret(settings) == first
    assert instance_secret(load_settings(data_dir=tmp_path / "data")) == first
    assert instance_secret(load_settings(data_dir=tmp_path / "other")) != first


def test_a_configured_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    configured = load_settings(data_dir=tmp_path, secret_key="s" * 40)
    assert instance_secret(configured) == b"s" * 40
    assert not (tmp_path / "secret_key").exists()
    with pytest.raises(ConfigError, match=r"secret_key \(env KEEPDESK_SECRET_KEY\)"):
        instance_secret(load_settings(data_dir=tmp_path, secret_key="short"))


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []
