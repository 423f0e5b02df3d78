"""Settings layering (defaults < YAML < environment < flags) and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from stord.server.config import ConfigError, load_settings, redact_url


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
