"""Settings of every mailintake service: one class, one prefix (``MAILINTAKE_``).

Each field's description is the documentation: the README's settings table is checked
against this class by the test suite, so a new setting without a row there fails CI.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MAILINTAKE_"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Configuration read from ``MAILINTAKE_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", frozen=True
    )

    # --- storage -------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///mailintake.db",
        description="SQLAlchemy URL of the database. PostgreSQL in production "
        "(`postgresql+psycopg2://user:pass@host/db`); SQLite for a one-machine run.",
    )
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys (32 url-safe base64-encoded bytes each) that encrypt "
        "secrets at rest (AES-256-GCM, each secret bound to its row and destination). The "
        "first encrypts new secrets; all of them decrypt (add a new key in front to rotate). "
        "Generate one with `mailintake-keygen`. Required by every service, and by "
        "`mailintake-migrate` when there are secrets to re-encrypt.",
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated `host:port` list of Kafka brokers."
    )
    topic_prefix: str = Field(
        "mailintake.", description="Prefix of every topic name (e.g. `mailintake.poll.due`)."
    )
    topic_partitions: int = Field(
        12, ge=1, description="Partitions of each topic when the services create it."
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of each topic when the services create it."
    )
    create_topics: bool = Field(
        True, description="Create missing topics with their configs at start-up."
    )
    kafka_client_id: str = Field("mailintake", description="Client id prefix sent to the brokers.")
    kafka_metadata_max_age_ms: int = Field(
        30_000,
        ge=1000,
        description="How often clients refresh the broker's metadata: bounds how long a "
        "consumer misses a topic that was recreated (a broker restarted without its data).",
    )
    kafka_max_poll_interval_ms: int = Field(
        300_000,
        ge=1000,
        description="Consumer `max.poll.interval.ms`: the longest a consumer may spend on one "
        "batch before the group evicts it. Keep it above the poll budget's seconds.",
    )

    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Consumer `session.timeout.ms`: a consumer silent this long is replaced. "
        "Heartbeats go every third of it. Lower values make group joins faster.",
    )

    # --- HTTP (health, readiness, metrics; the API itself for config-api) ---------------
    http_host: str = Field("127.0.0.1", description="Address the service's HTTP server binds.")
    http_port: int = Field(
        8000, ge=0, le=65535, description="Port of the service's HTTP server (0: any free port)."
    )

    # --- config API ----------------------------------------------------------------------
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `role:sha256hex` entries, one per API bearer token; role is "
        "`viewer` (reads metadata), `reader` (also reads mail content: raw messages) or `admin` "
        "(reads everything and writes). Hash a token with "
        "`mailintake-config-api hash-token`.",
    )
    api_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body the config API reads; larger ones are answered 413.",
    )
    api_auth_failures_per_minute: int = Field(
        30,
        ge=1,
        description="Failed authentications a client address may make in a minute; past that "
        "its further failures are answered 429 until the minute has passed. Only failures are "
        "counted and slowed: a valid token is always served.",
    )
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins whose browser pages may call the config API (CORS); "
        "none by default.",
    )
    api_forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Comma-separated addresses or CIDR ranges of reverse proxies (the ingress "
        "controller) whose X-Forwarded-For the config API trusts for the client address (the "
        "failed-authentication limit, the audit log); `*` trusts all.",
    )
    console_enabled: bool = Field(
        True,
        description="Serve the operators' web console at `/console` on the config API (sign-in "
        "with an API token; the roles apply as in the API).",
    )
    console_session_minutes: float = Field(
        480.0,
        gt=0,
        description="How long a sign-in to the web console lasts (signing out ends it sooner).",
    )
    connections_resync_seconds: float = Field(
        300.0,
        ge=0,
        description="The config API republishes every connection's state this often, so that "
        "the connections topic heals after a broker lost its data (0: never).",
    )
    connections_check_seconds: float = Field(
        5.0,
        gt=0,
        description="How often the config API checks that the connections topic is still the "
        "one it published to; a new one (a broker that came back empty) gets every "
        "connection's state at once. It also republishes when it starts.",
    )
    enable_ack_threshold: int = Field(
        0,
        ge=0,
        description="Enabling a connection whose first poll would download more messages than "
        "this answers 409 with the estimate, until the request acknowledges that number.",
    )
    log_retention_days: float = Field(
        30.0,
        ge=0,
        description="The Incoming Mail Log (per poll and per message) keeps this many days "
        "(0: forever).",
    )
    queue_retention_days: float = Field(
        30.0,
        ge=0,
        description="Failed entries of the Incoming Mail Queue are purged after this many days "
        "(0: never); stored messages are not touched.",
    )
    purge_interval_seconds: float = Field(
        3600.0, gt=0, description="How often the config API purges by the retention settings."
    )
    microsoft_imap_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "outlook.office365.com",
            "outlook.office.de",
            "partner.outlook.cn",
            "outlook.office365.us",
        ],
        description="Hosts a Microsoft OAuth2 IMAP connection may use instead of the default "
        "`outlook.office365.com` (comma-separated; `host:port` pins a port other than 993).",
    )
    google_imap_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["imap.gmail.com"],
        description="Hosts a Google OAuth2 connection may use; the first is the default "
        "(comma-separated; `host:port` pins a port other than 993).",
    )

    outbound_deny_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated address ranges (CIDR) mail connections may not reach, on "
        "top of the built-in ones (loopback, link-local, every documented cloud metadata "
        "endpoint, multicast); e.g. the cluster's pod and service ranges.",
    )
    outbound_allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated address ranges (CIDR) mail connections may reach even when "
        "denied (built-in or by MAILINTAKE_OUTBOUND_DENY_CIDRS): a mail server on this host "
        "(`127.0.0.1/32`) or a lab network.",
    )

    # --- OAuth2 ---------------------------------------------------------------------------
    oauth_redirect_uri: str = Field(
        "http://127.0.0.1:8000/oauth/callback",
        description="The config API's public `/oauth/callback` URL, registered with Google and "
        "Microsoft as the app's redirect URI.",
    )
    google_authorization_endpoint: str = Field(
        "https://accounts.google.com/o/oauth2/v2/auth",
        description="Google's OAuth2 authorization endpoint.",
    )
    google_token_endpoint: str = Field(
        "https://oauth2.googleapis.com/token", description="Google's OAuth2 token endpoint."
    )
    microsoft_authority_host: str = Field(
        "https://login.microsoftonline.com",
        description="Microsoft Entra's authority host (another cloud: its own host); the "
        "credential's tenant is appended.",
    )
    graph_endpoint: str = Field(
        "https://graph.microsoft.com/v1.0",
        description="Microsoft Graph's endpoint (another cloud: its own, e.g. "
        "`https://graph.microsoft.us/v1.0`).",
    )
    oauth_ca_file: str | None = Field(
        None,
        description="A CA bundle to trust for the identity provider's and Graph's endpoints (a "
        "private provider); default: the system's CAs.",
    )
    oauth_state_seconds: float = Field(
        600.0, gt=0, description="How long an authorization URL stays usable."
    )
    oauth_refresh_margin_seconds: float = Field(
        300.0,
        ge=0,
        description="An access token this close to expiry is refreshed before it is used.",
    )

    # --- polling ------------------------------------------------------------------------
    poll_max_messages: int = Field(
        5000, ge=1, description="Most messages one poll downloads; more continue in the next."
    )
    poll_max_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="A poll hands over after the message that reaches this many bytes (so a "
        "single larger message still goes through).",
    )
    poll_max_seconds: float = Field(
        60.0, gt=0, description="Longest a poll keeps downloading before it hands over."
    )
    poll_session_max_seconds: float = Field(
        240.0,
        gt=0,
        description="Longest a poll's session with the mail server may last, whatever the "
        "server sends: past it the session is cut, so that a server answering one byte at a "
        "time, or without end, cannot hold a fetcher; the message in hand counts as not "
        "delivered. Keep it above MAILINTAKE_POLL_MAX_SECONDS and below "
        "MAILINTAKE_KAFKA_MAX_POLL_INTERVAL_MS.",
    )
    max_message_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        le=1000 * 1024 * 1024,
        description="Largest message downloaded. A larger one (by the size the server "
        "announces, or by the bytes it keeps sending) is not downloaded further and counts as "
        "not delivered: after MAILINTAKE_DOWNLOAD_ATTEMPTS polls it waits in the Incoming Mail "
        "Queue. At most 1000 MiB: PostgreSQL holds at most 1 GB in a value.",
    )
    download_attempts: int = Field(
        3,
        ge=1,
        description="A message the server holds but does not deliver (BODY[] NIL, no answer, "
        "-ERR to RETR) is tried again by this many polls in a row, then set aside in the "
        "Incoming Mail Queue with the server's words, and the folder moves on.",
    )
    poll_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="A poll not completed after this long is issued again by the scheduler.",
    )
    poll_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A fetcher's lease on the connection it polls, renewed every third of it "
        "while the poll runs: a crashed or paused fetcher's connections are polled again after "
        "this long.",
    )
    max_sessions_per_host: int = Field(
        20,
        ge=1,
        description="Most concurrent sessions to one mail server host, across every fetcher "
        "(PostgreSQL; more polls wait for a slot).",
    )
    max_sessions_per_account: int = Field(
        2,
        ge=1,
        description="Most concurrent sessions to one account on one host, across every "
        "fetcher (servers cap them: Dovecot's mail_max_userip_connections, Gmail's 15).",
    )
    poll_jitter_seconds: float = Field(
        60.0,
        ge=0,
        description="First polls are spread over this window (a stable offset per connection).",
    )
    stalled_after_seconds: float = Field(
        3600.0,
        gt=0,
        description="A connection without a successful poll for this long is reported stalled "
        "(connection.health event, metric, API status).",
    )
    retry_base_seconds: float = Field(
        30.0, gt=0, description="Delay before retrying a failed poll; doubles per failure."
    )
    retry_max_seconds: float = Field(
        3600.0, gt=0, description="Longest delay between retries of a failing connection."
    )
    fetch_batch_messages: int = Field(
        500, ge=1, description="Messages asked for in one IMAP FETCH command."
    )
    chunk_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=700 * 1024,
        description="Mail larger than this travels in chunks of this size (keeps every record "
        "under Kafka's default 1 MB limit and the fetcher's memory bounded).",
    )

    # --- push (watcher) -------------------------------------------------------------------
    watch_idle_renew_seconds: float = Field(
        600.0,
        gt=0,
        le=1740,
        description="A watched IMAP folder's IDLE is ended and issued again this often (RFC "
        "2177: before 29 minutes); the round trip also proves the session alive.",
    )
    watch_reconnect_base_seconds: float = Field(
        2.0,
        gt=0,
        description="Delay before a dropped watch reconnects; doubles per failure in a row, "
        "with jitter. Interval polls go on meanwhile.",
    )
    watch_reconnect_max_seconds: float = Field(
        300.0, gt=0, description="Longest delay between attempts to restore a watch."
    )
    watch_heartbeat_seconds: float = Field(
        30.0,
        gt=0,
        description="How often a watcher confirms its watches in the database (the API shows "
        "a watch not confirmed for three times this long as lost) and renews what is due.",
    )
    graph_notification_url: str | None = Field(
        None,
        description="The config API's public `/graph/notifications` URL (HTTPS, reachable by "
        "Microsoft Graph). Graph connections are watched through change notifications only "
        "when it is set.",
    )
    graph_subscription_minutes: int = Field(
        4230,
        ge=1,
        le=10080,
        description="Lifetime asked for a Graph change-notification subscription; it is "
        "renewed when half of it has passed.",
    )

    # --- store ---------------------------------------------------------------------------
    store_batch_records: int = Field(
        500, ge=1, description="Most fetched records the store writes in one transaction."
    )
    inline_max_bytes: int = Field(
        256 * 1024,
        ge=0,
        description="`mail.stored` events carry the raw message inline up to this size; larger "
        "ones only by reference (`GET /messages/{id}/raw`).",
    )

    # --- logging -------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written to the JSON log on standard output."
    )

    @field_validator(
        "encryption_keys",
        "api_tokens",
        "microsoft_imap_hosts",
        "google_imap_hosts",
        "outbound_deny_cidrs",
        "outbound_allow_cidrs",
        "api_cors_origins",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("outbound_deny_cidrs", "outbound_allow_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("api_tokens")
    @classmethod
    def _token_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            role, _, digest = entry.partition(":")
            if role not in ("admin", "reader", "viewer") or len(digest) != 64:
                raise ValueError(
                    "each api_tokens entry must be `role:<sha256 hex>` with role admin, reader "
                    "or viewer"
                )
            int(digest, 16)
        return value

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
