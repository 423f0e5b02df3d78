"""Settings layering (defaults < YAML < environment < flags) and validation messages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from stord.server.cli.main import main
from stord.server.config import ENVIRONMENT, ConfigError, load_settings, redact_url


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.cache == "memory://"
    assert settings.retention_days == 90
    assert settings.database_url == f"sqlite:///{Path('stord-data').resolve() / 'stord.db'}"


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text(
        "listen: 0.0.0.0:1\ncache: redis://yaml\nlog_level: debug\npostgres:\n  pool_max_size: 3\n"
    )
    environ = {"STORD_CONFIG": str(config), "STORD_CACHE_URL": "redis://env", "STORD_LOG_LEVEL": "WARNING"}
    settings = load_settings(environ=environ, flags={"log_level": "error", "listen": None})
    assert settings.listen == "0.0.0.0:1"  # YAML beats the default; an absent flag changes nothing
    assert settings.cache == "redis://env"  # environment beats YAML
    assert settings.log_level == "error"  # flags beat the environment
    assert settings.postgres.pool_max_size == 3


def test_yaml_references_the_environment_for_secrets(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("database: postgresql://stord:${DB_PASSWORD}@db/stord\n")
    settings = load_settings(config_file=config, environ={"DB_PASSWORD": "s3cret"})
    assert settings.database_url == "postgresql://stord:s3cret@db/stord"
    assert redact_url(settings.database_url) == "postgresql://stord:***@db/stord"
    with pytest.raises(ConfigError, match=r"\$\{DB_PASSWORD\}, which is not set"):
        load_settings(config_file=config, environ={})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"STORD_LISTEN": "nonsense"}, "listen: .*HOST:PORT"),
        ({"STORD_RETENTION_DAYS": "-1"}, "retention_days"),
        ({"STORD_LOG_FORMAT": "xml"}, "log_format"),
        ({"STORD_DATABASE_URL": "mysql://x"}, "database: .*unsupported URL scheme"),
    ],
)
def test_invalid_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"STORD_LISTEN": "127.0.0.1:99999"},
            "listen: port 99999 is out of range: must be 1-65535 (or 0, any free port)",
        ),
        (
            {"STORD_DATABASE_URL": "mysql://x"},
            "database: unsupported URL scheme in 'mysql://x'; use sqlite:///path/to/stord.db,"
            " postgresql://... (or postgres://...), redis://..., rediss://... (TLS) or"
            " unix:///path/to/redis.sock, or memory://",
        ),
        (
            {"STORD_CACHE_URL": "http://x"},
            "cache: unsupported URL scheme in 'http://x'; use memory://, redis://..., rediss://... (TLS) or"
            " unix:///path/to/redis.sock, or a database URL: sqlite:///path/to/stord.db, postgresql://..."
            " (or postgres://...)",
        ),
        (
            {"STORD_WORKERS": "2", "STORD_DATABASE_URL": "sqlite:///s.db"},
            "workers=2 needs a cache all the processes share",  # the settings as a whole: no prefix
        ),
    ],
    ids=["port-range", "database-schemes", "cache-schemes", "whole-settings"],
)
def test_messages_say_what_is_wrong_in_words(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ)
    assert str(raised.value).startswith(f"invalid settings: {message}")
    assert "Value error" not in str(raised.value)


def test_unknown_yaml_setting_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("listne: 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="listne"):
        load_settings(config_file=config, environ={})


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config_file=config, environ={})


def test_alert_settings_layer_and_keep_webhook_secrets_out_of_sight(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text(
        "alert_interval: 30\nalerts:\n  webhook_secrets: {shop: '${SHOP_SECRET}', '*': fallback}\n"
        "  delivery_deadline: 60\n"
    )
    environ = {"STORD_CONFIG": str(config), "SHOP_SECRET": "hush-hush"}
    settings = load_settings(environ=environ)
    assert settings.alert_interval == 30
    assert settings.alerts.webhook_secrets["shop"].get_secret_value() == "hush-hush"
    assert settings.alerts.delivery_deadline == 60
    assert "hush-hush" not in repr(settings)
    assert "hush-hush" not in settings.model_dump_json()
    assert load_settings(environ={**environ, "STORD_ALERT_INTERVAL": "5"}).alert_interval == 5
    assert load_settings(environ=environ, flags={"alert_interval": 0}).alert_interval == 0
    with pytest.raises(ConfigError, match="alert_interval"):
        load_settings(environ={"STORD_ALERT_INTERVAL": "-1"})


def test_stord_config_prints_each_setting_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text(
        "database: postgresql://stord:${DB_PASSWORD}@db/stord\nsqlite: {readers: 2}\nretention_days: 30\n"
    )
    for name in [name for name in os.environ if name.startswith("STORD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    monkeypatch.setenv("STORD_RETENTION_DAYS", "7")
    monkeypatch.setenv("STORD_CACHE_URL", "redis://:cachepass@cache:6379/0")
    monkeypatch.setenv("STORD_API_KEY", "client-secret")
    assert main(["config", "--config", str(config), "--retention-days", "3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["retention_days"] == {"value": 3, "source": "flag --retention-days"}  # flag > env > file
    assert shown["database"] == {"value": "postgresql://stord:***@db/stord", "source": f"file {config}"}
    assert shown["cache"] == {"value": "redis://:***@cache:6379/0", "source": "env STORD_CACHE_URL"}
    assert shown["sqlite.readers"] == {"value": 2, "source": f"file {config}"}
    assert shown["sqlite.synchronous"] == {"value": "NORMAL", "source": "default"}
    assert shown["listen"] == {"value": "127.0.0.1:50051", "source": "default"}
    assert shown["client.api_key"] == {"value": "***", "source": "env STORD_API_KEY"}

    assert main(["config", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    for secret in ("hunter2", "cachepass", "client-secret"):
        assert secret not in table
    assert re.search(r"^retention_days +7 +env STORD_RETENTION_DAYS$", table, re.MULTILINE)
    assert re.search(r"^database +postgresql://stord:\*\*\*@db/stord +file ", table, re.MULTILINE)

    assert main(["config", "--retention-days", "-1"]) == 2
    assert "retention_days" in capsys.readouterr().err


def test_stord_config_names_each_unread_stord_variable_with_a_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [name for name in os.environ if name.startswith("STORD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STORD_DATABASE", "memory://")
    monkeypatch.setenv("STORD_RETENTON_DAYS", "7")
    monkeypatch.setenv("STORD_ZZZ", "1")
    monkeypatch.setenv("STORD_TLS_CA", "/nowhere.pem")  # a client option: read, so not named
    monkeypatch.setenv("STORD_DB_PASSWORD", "hunter2")  # read by the config file's reference
    config = tmp_path / "stord.yaml"
    config.write_text("database: postgresql://stord:${STORD_DB_PASSWORD}@db/stord\n")
    assert main(["config", "--config", str(config), "--json"]) == 0  # warned, not refused
    assert capsys.readouterr().err.splitlines() == [
        "stord: STORD_DATABASE is not a stord setting and is ignored (did you mean STORD_DATABASE_URL?)",
        "stord: STORD_RETENTON_DAYS is not a stord setting and is ignored"
        " (did you mean STORD_RETENTION_DAYS?)",
        "stord: STORD_ZZZ is not a stord setting and is ignored",
    ]


def test_serve_help_names_every_environment_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at any space
    for name, variable in ENVIRONMENT.items():
        assert f"--{name.replace('_', '-')}" in help_text, name
        assert f"({variable}; default " in help_text, name
    assert "--retention-days DAYS delete events older than this" in help_text
    assert "(STORD_RETENTION_DAYS; default 90)" in help_text
