"""Configuration (placeholder: being replaced by the full pydantic-settings version)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024


class PluginSettings(BaseModel):
    disable_autoload: bool = False
    blocked: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STATEKIT_", env_nested_delimiter="__")

    url: SecretStr | None = None
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    enable_validation: bool = True
    plugins: PluginSettings = Field(default_factory=PluginSettings)

    def store_url(self) -> str:
        return self.url.get_secret_value() if self.url else "sqlite:///statekit.db"


def load_settings() -> Settings:
    return Settings()
