"""Settings: defaults < the TOML file < the environment < command-line options; bad values name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import ProcessRole, Settings, SettingsError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "releasegate.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file_or_variables() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.role, settings.migrate, settings.port) == (ProcessRole.ALL, True, 8080)
    assert settings.log_format == "text"


def test_the_file_sets_values_and_the_environment_overrides_it(tmp_path: Path) -> None:
    path = write(tmp_path, """
database_url = "postgresql+psycopg://rg@db/rg"
port = 9000
role = "controller"
migrate = false
loop_interval_seconds = 5
log_level = "debug"
""")
    settings = Settings.from_env({"RELEASEGATE_PORT": "9100", "RELEASEGATE_MIGRATE": "true"}, config=path)
    assert settings.database_url == "postgresql+psycopg://rg@db/rg"  # from the file
    assert settings.role is ProcessRole.CONTROLLER
    assert settings.loop_interval_seconds == 5
    assert settings.log_level == "DEBUG"  # normalised
    assert settings.port == 9100  # the environment wins over the file
    assert settings.migrate is True
    assert settings.sweep_interval_seconds == 600  # neither: the default


def test_releasegate_config_names_the_file_and_options_win_over_everything(tmp_path: Path) -> None:
    path = write(tmp_path, 'role = "controller"\nhost = "0.0.0.0"\n')
    environ = {"RELEASEGATE_CONFIG": str(path), "RELEASEGATE_ROLE": "api"}
    assert Settings.from_env(environ).role is ProcessRole.API
    assert Settings.from_env(environ).host == "0.0.0.0"
    assert Settings.from_env(environ, role="all", host=None).role is ProcessRole.ALL  # None: option not given
    assert Settings.from_env(environ, role=ProcessRole.CONTROLLER).role is ProcessRole.CONTROLLER


def test_an_explicit_config_path_beats_releasegate_config(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 7000\n")
    path = write(tmp_path, "port = 9000\n")
    assert Settings.from_env({"RELEASEGATE_CONFIG": str(other)}, config=path).port == 9000


def test_an_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"RELEASEGATE_PORT": "", "RELEASEGATE_ROLE": ""}) == Settings()


@pytest.mark.parametrize("name, value", [
    ("RELEASEGATE_MIGRATE", "false"), ("RELEASEGATE_MIGRATE", "0"), ("RELEASEGATE_MIGRATE", "No"),
    ("RELEASEGATE_MIGRATE", "off"),
])
def test_false_spellings(name: str, value: str) -> None:
    assert Settings.from_env({name: value}).migrate is False


@pytest.mark.parametrize("environ, message", [
    ({"RELEASEGATE_PORT": "http"}, "RELEASEGATE_PORT: expected an integer, got 'http'"),
    ({"RELEASEGATE_PORT": "70000"}, "RELEASEGATE_PORT: must be at most 65535, got 70000"),
    ({"RELEASEGATE_LOOP_INTERVAL_SECONDS": "0"}, "RELEASEGATE_LOOP_INTERVAL_SECONDS: must be at least 1, got 0"),
    ({"RELEASEGATE_DB_POOL_SIZE": "2.5"}, "RELEASEGATE_DB_POOL_SIZE: expected an integer, got '2.5'"),
    ({"RELEASEGATE_ROLE": "worker"}, "RELEASEGATE_ROLE: expected one of all, api, controller, got 'worker'"),
    ({"RELEASEGATE_MIGRATE": "maybe"}, "RELEASEGATE_MIGRATE: expected true or false, got 'maybe'"),
    ({"RELEASEGATE_LOG_FORMAT": "xml"}, "RELEASEGATE_LOG_FORMAT: expected one of text, json, got 'xml'"),
    ({"RELEASEGATE_LOG_LEVEL": "loud"}, "RELEASEGATE_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR, "
                                         "CRITICAL, got 'LOUD'"),
])
def test_bad_variables_are_rejected_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    assert str(raised.value) == message


@pytest.mark.parametrize("text, message", [
    ("loop_interval = 3\n", "unknown setting 'loop_interval'; did you mean 'loop_interval_seconds'?"),
    ("zzz = 1\n", "unknown setting 'zzz'; known settings: database_url, host, port,"),
    ('port = "8080"\n', "port: expected an integer, got str '8080'"),
    ("migrate = 1\n", "migrate: expected true or false, got int 1"),
    ("port = true\n", "port: expected an integer, got bool True"),
    ("host = 1\n", "host: expected a string, got int 1"),
    ("[server]\nport = 1\n", "unknown setting 'server'"),
    ('role = "worker"\n', "role: expected one of all, api, controller, got 'worker'"),
    ("reconcile_batch_size = 0\n", "reconcile_batch_size: must be at least 1, got 0"),
    ("port = \n", "invalid TOML"),
])
def test_bad_file_contents_are_rejected_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({}, config=path)
    assert str(raised.value).startswith(f"{path}: {message}")


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"RELEASEGATE_CONFIG": str(missing)})
    assert str(raised.value) == f"config file {missing}: cannot be read (No such file or directory)"


def test_a_bad_option_names_the_option() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({}, role="both")
    assert str(raised.value) == "--role: expected one of all, api, controller, got 'both'"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({}, port=0)
    assert str(raised.value) == "--port: must be at least 1, got 0"


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(job_lease_seconds=0)
    assert str(raised.value) == "job_lease_seconds: must be at least 1, got 0"


@pytest.mark.parametrize("role, serves_api, runs_controller", [
    (ProcessRole.ALL, True, True), (ProcessRole.API, True, False), (ProcessRole.CONTROLLER, False, True),
])
def test_roles(role: ProcessRole, serves_api: bool, runs_controller: bool) -> None:
    assert (role.serves_api, role.runs_controller) == (serves_api, runs_controller)
