"""Settings: defaults <- YAML file <- environment <- command line."""

import pytest

from eds_server.settings import SettingsError, load_settings


def test_defaults():
    settings = load_settings([], environ={})
    assert (settings.host, settings.port, settings.store) == ("0.0.0.0", 8080, "sqlite:///data/registry.db")


def test_a_redis_store_from_the_environment():
    url = "rediss://:pw@redis.internal:6380/2?ssl_ca_certs=/etc/ssl/ca.pem"
    assert load_settings([], environ={"EDS_STORE": url}).store == url


def test_precedence(tmp_path):
    config = tmp_path / "eds.yaml"
    config.write_text("port: 7000\nworkers: 4\nlog_level: debug\naccess_log: true\n")
    environ = {"EDS_PORT": "7100", "EDS_CONFIG": str(config), "EDS_ACCESS_LOG": "no"}
    settings = load_settings(["--port", "7200"], environ=environ)
    assert settings.port == 7200 and settings.workers == 4 and settings.log_level == "debug"
    assert settings.access_log is False
    assert load_settings([], environ=environ).port == 7100


@pytest.mark.parametrize(
    "word, value",
    [("false", False), ("0", False), ("no", False), ("FALSE", False), ("true", True), ("1", True), ("yes", True)],
)
def test_booleans_from_the_environment(word, value):
    assert load_settings([], environ={"EDS_ACCESS_LOG": word}).access_log is value


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"EDS_PORT": "eighty"}, "not an integer"),
        ({"EDS_PORT": "0"}, "1-65535"),
        ({"EDS_ACCESS_LOG": "maybe"}, "not a boolean"),
        ({"EDS_STORE": "memory://", "EDS_WORKERS": "2"}, "--workers 1"),
        ({"EDS_STORE": "ftp://x"}, "unknown scheme"),
        ({"EDS_STORE": "redis://:pw@redis.internal:6379/db0"}, "database number"),
        ({"EDS_CONFIG": "/nonexistent.yaml"}, "No such file"),
        ({"EDS_PORT": "1e400"}, "not an integer"),
        ({"EDS_LONG_POLL_MAX_HOLD": "nan"}, "not a finite number"),
        ({"EDS_LONG_POLL_MAX_HOLD": "inf"}, "not a finite number"),
        ({"EDS_TRUSTED_PROXIES": "10.0.0.1,10.0.0.300"}, "'10.0.0.300' is not an IP address or network"),
        ({"EDS_CLIENTS_MAX_ROWS": "0"}, "at least 1"),
        ({"EDS_BODY_READ_TIMEOUT": "0"}, "more than 0 seconds"),
        ({"EDS_SUBSCRIBED_WITHIN": "1"}, "subscribed_within 1.0: must be more than clients_flush_interval"),
        ({"EDS_PROPAGATION_MAX_WAIT": "-1"}, "propagation_max_wait -1.0: must be 0 or more seconds"),
    ],
)
def test_bad_settings_say_what_is_wrong(environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings([], environ=environ)


def test_unknown_key_in_the_config_file(tmp_path):
    config = tmp_path / "eds.yaml"
    config.write_text("prot: 7000\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings(["--config", str(config)], environ={})


def test_trusted_proxies_are_addresses_or_networks(tmp_path):
    config = tmp_path / "eds.yaml"
    config.write_text("trusted_proxies: [10.0.0.7, 10.1.0.0/16, '::1']\nport: .inf\n")
    with pytest.raises(SettingsError, match="port: inf is not an integer"):
        load_settings(["--config", str(config)], environ={})
    settings = load_settings([], environ={"EDS_TRUSTED_PROXIES": "10.0.0.7, 10.1.0.0/16 ,::1"})
    assert settings.trusted_proxies == ["10.0.0.7", "10.1.0.0/16", "::1"]
    assert load_settings([], environ={}).trusted_proxies == []


def test_successful_polls_are_left_out_of_the_access_log_unless_asked_for():
    assert load_settings([], environ={}).access_log_polls is False
    assert load_settings([], environ={"EDS_ACCESS_LOG_POLLS": "true"}).access_log_polls is True
