"""The catalog: found by env or cwd, validated with errors naming file and key, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.errors import ConfigError
from steps.settings import DEFAULT_CATALOG, ProviderKind, catalog_path, default_gguf_path, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


def test_builtin_catalog_is_used_without_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STEPLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert catalog_path() == DEFAULT_CATALOG
    settings = load_settings()
    assert settings.providers["local"].kind is ProviderKind.EMBEDDED
    assert settings.providers["local"].private


def test_local_stepline_toml_wins_over_builtin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STEPLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stepline.toml").write_text('[providers.p]\nkind = "embedded"\nprivate = true\n')
    assert load_settings().providers.keys() == {"p"}


def test_env_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEPLINE_CONFIG", str(write(tmp_path, 'database_url = "sqlite:///a.db"\n')))
    monkeypatch.setenv("STEPLINE_DATABASE_URL", "sqlite:///b.db")
    assert load_settings().database_url == "sqlite:///b.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[providers.p\nkind=", "not valid TOML"),
        ('[providers.p]\nkind = "nope"\n', "providers.p.kind"),
        ('[providers.p]\nkind = "openai"\napi_key = "sk-123"\n', "looks like a secret"),
        ('[providers.p]\nkind = "openai_compatible"\n', "needs base_url"),
        ('[providers.p]\nkind = "embedded"\n', "must be private = true"),
        ('[models.m]\nprovider = "ghost"\nmodel = "x"\n', "is not a provider"),
        (
            '[models.m]\nprovider = "p"\nmodel = "x"\ntier = "huge"\n[providers.p]\nkind="openai"\n',
            "models.m.tier",
        ),
        ('colour = "blue"\n', "colour"),
    ],
)
def test_bad_catalogs_name_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEPLINE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_api_keys_are_read_from_the_environment_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "STEPLINE_CONFIG",
        str(write(tmp_path, '[providers.p]\nkind = "openai"\napi_key_env = "MY_KEY"\n')),
    )
    monkeypatch.delenv("MY_KEY", raising=False)
    provider = load_settings().providers["p"]
    assert not provider.available
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert provider.available
    assert provider.api_key() == "sk-test"
    assert "sk-test" not in provider.model_dump_json()


def test_embedded_model_file_ships_in_the_wheel() -> None:
    path = default_gguf_path()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 10_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[retry.retries]\nrate_limitd = 3\n", "retry.retries.rate_limitd"),
        ("[retry.retries]\nauth = 3\n", "auth is never retried"),
        ("[retry]\nbase_delay_s = -1\n", "retry.base_delay_s"),
        ('[notify]\nurls = "json://x"\n', "notify.urls"),
        (
            '[providers.p]\nkind = "embedded"\nprivate = true\n[models.m]\nprovider = "p"\nmodel = "c"\n'
            'structured_mode = "tools"\n',
            "not supported by embedded providers",
        ),
    ],
)
def test_bad_failure_handling_config_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    monkeypatch.setenv("STEPLINE_CONFIG", str(write(tmp_path, text)))
    with pytest.raises(ConfigError, match=expected):
        load_settings()
