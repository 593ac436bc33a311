"""Every setting chatdesk reads from the environment, in one place (documented in README).

Storage and bus are chosen independently: `DATABASE_URL` set means PostgreSQL (one schema per
service), unset means one SQLite file per service under `CHATDESK_DATA_DIR`; `AMQP_URL` set means
RabbitMQ, unset means the in-process bus, which only works when every service runs in one process.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("ingest", "contacts", "chat", "routing", "cases", "gateway")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATDESK_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "CHATDESK_DATABASE_URL")
    )
    amqp_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AMQP_URL", "CHATDESK_AMQP_URL")
    )
    data_dir: Path = Path("var")
    admin_password: SecretStr | None = None
    # Shared secret between our own services; required when they run as separate processes.
    internal_token: SecretStr | None = None

    gateway_port: int = Field(
        default=8000, validation_alias=AliasChoices("GATEWAY_PORT", "CHATDESK_GATEWAY_PORT")
    )
    ingest_port: int = Field(
        default=8001, validation_alias=AliasChoices("INGEST_PORT", "CHATDESK_INGEST_PORT")
    )
    routing_port: int = Field(
        default=8002, validation_alias=AliasChoices("ROUTING_PORT", "CHATDESK_ROUTING_PORT")
    )
    chat_port: int = Field(
        default=8003, validation_alias=AliasChoices("CHAT_PORT", "CHATDESK_CHAT_PORT")
    )
    contacts_port: int = Field(
        default=8004, validation_alias=AliasChoices("CONTACTS_PORT", "CHATDESK_CONTACTS_PORT")
    )
    cases_port: int = Field(
        default=8005, validation_alias=AliasChoices("CASES_PORT", "CHATDESK_CASES_PORT")
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP servers bind to.")
    # Where the other services are reached in distributed mode, `http://127.0.0.1:port` by default.
    ingest_url: str | None = None
    routing_url: str | None = None
    chat_url: str | None = None
    contacts_url: str | None = None
    cases_url: str | None = None

    exchange: str = "chatdesk"
    bus_prefetch: int = 64
    bus_max_attempts: int = 5
    bus_retry_delay_s: float = 2.0
    outbox_poll_s: float = 1.0
    outbox_batch: int = 200
    db_pool_size: int = 10

    # Replies to a platform: tries before "failed", first backoff (doubling; 429 waits its time).
    delivery_attempts: int = Field(default=5, ge=1)
    delivery_backoff_s: float = 1.0

    # Files (architecture decision 12): where they are kept, and how large one may be.
    blob_store: Literal["auto", "directory", "postgres"] = "auto"
    blob_dir: Path | None = None  # directory store; CHATDESK_DATA_DIR/blobs when unset
    blob_database_url: str | None = None  # postgres store; DATABASE_URL when unset
    max_file_mb: float = Field(default=25.0, gt=0)

    token_ttl_hours: int = 12
    # Routing: how often each replica's clock looks for due timers, and how long every console
    # of an agent may be gone before it counts as a logout (gateways report open consoles
    # three times per period).
    routing_tick_s: float = Field(default=1.0, gt=0)
    presence_grace_s: float = Field(default=60.0, ge=1)
    telegram_api_base: str = "https://api.telegram.org"
    # Where the platforms reach ingest's webhooks (`https://chat.example.com`). Set: Telegram
    # channels register `{public_base_url}/webhooks/telegram/{id}`. Unset: ingest long-polls.
    public_base_url: str | None = Field(default=None, pattern=r"^https?://")
    # Long polling: how long one getUpdates waits for news, and how long a replica's claim on a
    # channel lasts without renewal (another replica takes the channel over after it).
    telegram_poll_timeout_s: int = Field(default=25, ge=1, le=50)
    telegram_lease_s: float = Field(default=30.0, gt=0)
    # Webhook mode: how often Telegram is asked whether it can deliver to the webhook.
    telegram_webhook_check_s: float = Field(default=300.0, gt=0)
    # Graph API, with the version the Messenger calls are written against.
    facebook_api_base: str = "https://graph.facebook.com/v25.0"
    log_level: str = "INFO"
    log_format: str = "json"

    @field_validator("public_base_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # `CHATDESK_PUBLIC_BASE_URL=` (as compose passes an unset variable) means long polling.
        return value or None

    @model_validator(mode="after")
    def _internal_token_when_distributed(self) -> Settings:
        if self.amqp_url is not None and self.internal_token is None:
            raise ValueError(
                "CHATDESK_INTERNAL_TOKEN must be set when AMQP_URL is set: services then run as "
                "separate processes and authenticate each other's internal calls with it"
            )
        return self

    @property
    def embedded(self) -> bool:
        """Embedded mode: SQLite files and the in-process bus, every service in one process."""
        return self.database_url is None

    @cached_property
    def data_path(self) -> Path:
        path = self.data_dir.resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def service_url(self, service: str) -> str:
        url: str | None = getattr(self, f"{service}_url")
        return url or f"http://127.0.0.1:{self.port(service)}"
