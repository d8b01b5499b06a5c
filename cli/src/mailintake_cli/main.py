"""Operate mailintake: connections, the Incoming Mail Queue and Log, over the config API.

The API's address and token come from ``--api-url``/``--token`` or ``MAILINTAKE_API_URL``/
``MAILINTAKE_API_TOKEN``; in a checkout running ``make run`` those of ``.devstack/`` are used
when neither is given. Tables for people (full width when piped), ``--output json`` (or a
command's ``--json``) for scripts.
"""

from __future__ import annotations

import base64
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mailintake_cli.client import Api, ApiError
from mailintake_cli.output import Format, console, emit, errors

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True)
connections_app = typer.Typer(help="Incoming mail connections.", no_args_is_help=True)
queue_app = typer.Typer(help="The Incoming Mail Queue: mail not all the way through.")
log_app = typer.Typer(help="The Incoming Mail Log: polls and messages.", no_args_is_help=True)
credentials_app = typer.Typer(
    help="OAuth2 credentials: apps registered with Google or Microsoft.", no_args_is_help=True
)
app.add_typer(connections_app, name="connections")
certificates_app = typer.Typer(
    help="S/MIME certificates with their keys: decrypt a connection's mail.", no_args_is_help=True
)
app.add_typer(credentials_app, name="credentials")
app.add_typer(certificates_app, name="certificates")
app.add_typer(queue_app, name="queue")
app.add_typer(log_app, name="log")

CONNECTION_COLUMNS = ("id", "name", "protocol", "host", "username", "enabled")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ConnectionRef = Annotated[str, typer.Argument(help="Connection id or exact name.")]
DEVSTACK = Path(".devstack")
DEFAULT_API_URL = "http://127.0.0.1:8000"
WHERE_TOKENS_COME_FROM = (
    "the API needs a token: set MAILINTAKE_API_TOKEN or pass --token (an admin or viewer "
    "token; `make token` makes one and its settings entry; `make run` keeps its admin token "
    "in .devstack/admin-token)"
)


class _State:
    api: Api
    source = ""  # where the token came from, said when the API refuses it


state = _State()


def _devstack_env() -> dict[str, str]:
    """What ``make run`` wrote for clients in this checkout (its API's address)."""
    path = DEVSTACK / "env"
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@app.callback()
def main(
    api_url: Annotated[
        str | None,
        typer.Option(
            envvar="MAILINTAKE_API_URL",
            help=f"The config API's base URL [default: make run's, else {DEFAULT_API_URL}]",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="MAILINTAKE_API_TOKEN", help="Bearer token (admin, reader or viewer)."),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            envvar="MAILINTAKE_OUTPUT", help="table or json (every command's --json at once)."
        ),
    ] = "table",
) -> None:
    if output not in ("table", "json"):
        raise typer.BadParameter("table or json", param_hint="--output")
    Format.json = output == "json"
    state.source = "given" if token is not None else ""
    kept = DEVSTACK / "admin-token"
    if token is None and kept.exists():
        token, state.source = kept.read_text().strip(), str(kept)
    url = api_url or _devstack_env().get("MAILINTAKE_API_URL", DEFAULT_API_URL)
    state.api = Api(url, token)


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        return state.api.call(method, path, **kwargs)
    except ApiError as exc:
        _fail(exc)


def _fail(exc: ApiError) -> NoReturn:
    errors.print(f"[red]error[/red] ({exc.status or 'network'}): {exc.detail}")
    if exc.status == 401:
        said = {"": "no token was given", "given": "the token was refused"}.get(
            state.source, f"the token of {state.source} was refused"
        )
        errors.print(f"{said}; {WHERE_TOKENS_COME_FROM}")
    raise typer.Exit(1) from None


def _id(ref: str) -> str:
    try:
        return state.api.connection_id(ref)
    except ApiError as exc:
        _fail(exc)


# --- connections ---------------------------------------------------------------------------
@connections_app.command("list")
def list_connections(
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Term over name, host, username…")
    ] = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOption = False,
) -> None:
    """List connections, or search them."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if search:
        params["q"] = search
    page = _call("GET", "/connections", params=params)
    emit(page, as_json=as_json, columns=CONNECTION_COLUMNS, title="connections")


@connections_app.command("show")
def show_connection(ref: ConnectionRef, as_json: JsonOption = False) -> None:
    """One connection with its polling status."""
    emit(_call("GET", f"/connections/{_id(ref)}"), as_json=as_json)


def _body(**options: Any) -> dict[str, Any]:
    """The options that were given, as an API body (a CA file is read; a date is ISO)."""
    body: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "tls_ca_file":
            body["tls_ca_pem"] = Path(value).read_text()
        elif isinstance(value, date | datetime):
            body[key] = value.date().isoformat() if isinstance(value, datetime) else value
        else:
            body[key] = value
    return body


PasswordOption = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input."),
]
PushOption = Annotated[
    str | None,
    typer.Option(help="auto (watch for new mail: IMAP IDLE, Graph notifications) or off."),
]


# The options that decide where a password goes: changing one needs the password again.
DESTINATION_OPTIONS = frozenset(
    {"host", "port", "encryption", "username", "tls_ca_pem", "tls_verify"}
)


def _password(from_stdin: bool, prompt: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if prompt:
        return _ask_secret("Password", "--password-stdin")
    return None


def _ask_secret(label: str, flag: str) -> str:
    """Ask on the terminal; without one, say how to hand the secret over instead."""
    if not sys.stdin.isatty():
        errors.print(
            f"[red]error[/red]: no terminal to ask for the {label.lower()} on: give it on "
            f"standard input with {flag} (e.g. `printf '%s\\n' \"$SECRET\" | mailintake … {flag}`)"
        )
        raise typer.Exit(1)
    return str(typer.prompt(label, hide_input=True, err=True))  # stdout stays data


@connections_app.command("create")
def create_connection(
    name: Annotated[str, typer.Option(help="Unique name.")],
    protocol: Annotated[str, typer.Option(help="imap, pop3, google_oauth2, microsoft_oauth2.")],
    username: Annotated[str, typer.Option()],
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    encryption: Annotated[str | None, typer.Option(help="none, ssl or starttls.")] = None,
    folder: Annotated[str | None, typer.Option()] = None,
    after_download: Annotated[
        str | None, typer.Option(help="mark_seen, keep (leave the server as it is) or delete.")
    ] = None,
    interval_minutes: Annotated[int | None, typer.Option()] = None,
    timeout_ms: Annotated[int | None, typer.Option()] = None,
    first_sync: Annotated[str | None, typer.Option(help="all, unseen, since or none.")] = None,
    first_sync_since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    tls_ca_file: Annotated[Path | None, typer.Option(help="PEM CA certificates.")] = None,
    tls_verify: Annotated[bool | None, typer.Option("--tls-verify/--no-tls-verify")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    oauth_credential_id: Annotated[
        str | None, typer.Option(help="OAuth2 protocols: the stored credential's id.")
    ] = None,
    transport: Annotated[str | None, typer.Option(help="Microsoft: imap or graph.")] = None,
    push: PushOption = None,
    password_stdin: PasswordOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create a connection (disabled; enable it when the test passes)."""
    body = _body(
        name=name,
        protocol=protocol,
        username=username,
        host=host,
        port=port,
        encryption=encryption,
        folder=folder,
        after_download=after_download,
        interval_minutes=interval_minutes,
        timeout_ms=timeout_ms,
        first_sync=first_sync,
        first_sync_since=first_sync_since,
        tls_ca_file=tls_ca_file,
        tls_verify=tls_verify,
        description=description,
        oauth_credential_id=oauth_credential_id,
        transport=transport,
        push=push,
        password=_password(password_stdin, prompt=protocol in ("imap", "pop3")),
    )
    emit(_call("POST", "/connections", json=body), as_json=as_json, title="created")


@connections_app.command("update")
def update_connection(
    ref: ConnectionRef,
    name: Annotated[str | None, typer.Option()] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    encryption: Annotated[str | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    folder: Annotated[str | None, typer.Option()] = None,
    after_download: Annotated[str | None, typer.Option()] = None,
    interval_minutes: Annotated[int | None, typer.Option()] = None,
    timeout_ms: Annotated[int | None, typer.Option()] = None,
    first_sync: Annotated[str | None, typer.Option()] = None,
    first_sync_since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    tls_ca_file: Annotated[Path | None, typer.Option()] = None,
    tls_verify: Annotated[bool | None, typer.Option("--tls-verify/--no-tls-verify")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    push: PushOption = None,
    password_stdin: PasswordOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change the options given; the others stay. A change of where the password goes (host,
    port, encryption, username, TLS settings) asks for the password again."""
    connection_id = _id(ref)
    body = _body(
        name=name,
        host=host,
        port=port,
        encryption=encryption,
        username=username,
        folder=folder,
        after_download=after_download,
        interval_minutes=interval_minutes,
        timeout_ms=timeout_ms,
        first_sync=first_sync,
        first_sync_since=first_sync_since,
        tls_ca_file=tls_ca_file,
        tls_verify=tls_verify,
        description=description,
        push=push,
    )
    moves = not DESTINATION_OPTIONS.isdisjoint(body)
    asks = (
        moves
        and not password_stdin
        and _call("GET", f"/connections/{connection_id}")["has_password"]
    )
    password = _password(password_stdin, prompt=bool(asks))
    if password is not None:
        body["password"] = password
    emit(
        _call("PATCH", f"/connections/{connection_id}", json=body), as_json=as_json, title="updated"
    )


@connections_app.command("delete")
def delete_connection(
    ref: ConnectionRef,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a connection (its stored mail stays)."""
    connection_id = _id(ref)
    if not yes:
        typer.confirm(f"Delete connection {ref}?", abort=True)
    _call("DELETE", f"/connections/{connection_id}")
    console.print(f"deleted {connection_id}")


@connections_app.command("test")
def check_connection(ref: ConnectionRef, as_json: JsonOption = False) -> None:
    """Connect, log in and open the folder; say which step failed. Exit 1 on failure."""
    result = _call("POST", f"/connections/{_id(ref)}/test")
    if as_json:
        emit(result, as_json=True)
    elif result["ok"]:
        console.print(
            f"[green]ok[/green] in {result['latency_ms']:.0f} ms: {result['messages']} messages; "
            f"server says {result['greeting']!r}"
        )
    else:
        console.print(f"[red]failed at {result['failed_step']}[/red]: {result['error']}")
    if not result["ok"]:
        raise typer.Exit(1)


@connections_app.command("enable")
def enable_connection(
    ref: ConnectionRef,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Acknowledge the estimate without asking.")
    ] = False,
    skip_estimate: Annotated[
        bool, typer.Option(help="Enable without contacting the server.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Enable polling: shows how many messages the first poll would download, and asks."""
    connection_id = _id(ref)
    path = f"/connections/{connection_id}/enable"
    try:
        enabled = state.api.call("POST", path, json={"skip_estimate": skip_estimate})
    except ApiError as exc:
        if exc.status != 409 or not isinstance(exc.body, dict):
            _fail(exc)
        estimate = exc.body["estimate"]
        count = estimate["messages"]
        console.print(
            f"The first poll would download {count} messages ({estimate['confidence']}, "
            f"first sync: {estimate['first_sync']})."
        )
        if not yes:
            typer.confirm(f"Download {count} messages and enable?", abort=True)
        enabled = _call("POST", path, json={"acknowledge_messages": count})
    if as_json or Format.json:
        emit(enabled, as_json=True)
    else:
        console.print(f"enabled {enabled['name']}; first poll: {enabled['first_poll']}")


@connections_app.command("authorize")
def authorize_connection(
    ref: ConnectionRef,
    wait: Annotated[bool, typer.Option(help="Wait until the sign-in is done.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 600.0,
) -> None:
    """Print the provider's sign-in URL for an OAuth2 connection and wait for the sign-in."""
    connection_id = _id(ref)
    started = _call("POST", f"/connections/{connection_id}/authorize")
    console.print("Open this URL in a browser, sign in as the mailbox's account and consent:")
    print(started["authorization_url"], flush=True)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    with console.status("waiting for the sign-in…"):
        while time.monotonic() < deadline:
            shown = _call("GET", f"/connections/{connection_id}")
            if shown["authorization"] == "authorized":
                console.print(f"[green]authorized[/green] {shown['name']}")
                return
            time.sleep(1)
    errors.print("[yellow]not authorized yet[/yellow]; the URL expires at " + started["expires_at"])
    raise typer.Exit(2)


@connections_app.command("disable")
def disable_connection(ref: ConnectionRef) -> None:
    """Stop polling (a poll under way finishes)."""
    disabled = _call("POST", f"/connections/{_id(ref)}/disable")
    console.print(f"disabled {disabled['name']}")


@connections_app.command("poll")
def poll_now(
    ref: ConnectionRef,
    wait: Annotated[bool, typer.Option(help="Wait and show progress until it ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 600.0,
) -> None:
    """Poll now; with --wait (the default) follow it until the mail is stored, saying what
    it waits for (and, when nothing comes, where to look)."""
    connection_id = _id(ref)
    previous = _latest_poll(connection_id)
    before = previous["poll_id"] if previous else None
    accepted = _call("POST", f"/connections/{connection_id}/poll")
    console.print(accepted["detail"])
    if not wait:
        return
    started = time.monotonic()
    latest: dict[str, Any] | None = None
    said = ""
    with console.status("waiting for the poll…") as status:
        while time.monotonic() - started < timeout:
            current = _latest_poll(connection_id)
            if current is not None and current["poll_id"] != before:
                latest = current
                text = (
                    f"poll {current['outcome'] or 'running'}: {current['stored']} stored, "
                    f"{current['duplicates']} duplicates, {current['bytes']} bytes"
                )
                status.update(text)
                if not console.is_terminal and text != said:
                    console.print(text)  # no live status line in a pipe: one line per change
                said = text
                if current["outcome"] and not current["more_pending"]:
                    break
                if current["outcome"]:
                    before = current["poll_id"]  # a continuation follows
            elif not said and time.monotonic() - started >= QUIET_POLL_S:
                said = "waiting"
                errors.print(
                    f"[yellow]no poll has reported after {QUIET_POLL_S:.0f} s[/yellow]; still "
                    "waiting. Are the scheduler and the fetcher running? `mailintake status`, "
                    "`make logs SERVICE=scheduler` (or fetcher) say more."
                )
            time.sleep(0.5)
        else:
            errors.print(
                f"[yellow]no end after {timeout:.0f} s[/yellow]; see `mailintake log polls`"
            )
            raise typer.Exit(2)
    assert latest is not None
    ok = latest["outcome"] == "ok"
    outcome = "[green]ok[/green]" if ok else f"[red]{latest['outcome']}[/red]"
    console.print(
        f"{outcome}: {latest['stored']} stored, {latest['duplicates']} duplicates"
        + (f"; {latest['error_kind']}: {latest['error']}" if latest["error"] else "")
    )
    if not ok:
        raise typer.Exit(1)


QUIET_POLL_S = 60.0  # a poll that reports nothing for this long gets a hint


def _latest_poll(connection_id: str) -> dict[str, Any] | None:
    page = _call("GET", "/log/polls", params={"connection_id": connection_id, "limit": 1})
    return page["items"][0] if page["items"] else None


# --- the queue -----------------------------------------------------------------------------
QUEUE_COLUMNS = ("kind", "id", "state", "connection_id", "server_id", "subject", "reason", "at")


def _window(
    connection: str | None, since: datetime | None, until: datetime | None, limit: int, offset: int
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if connection:
        params["connection_id"] = _id(connection)
    if since:
        params["since"] = since.isoformat()
    if until:
        params["until"] = until.isoformat()
    return params


ConnectionFilter = Annotated[str | None, typer.Option("--connection", "-c", help="Id or name.")]
SinceOption = Annotated[datetime | None, typer.Option(help="From (inclusive).")]
UntilOption = Annotated[datetime | None, typer.Option(help="Up to (exclusive).")]


@queue_app.callback(invoke_without_command=True)
def list_queue(
    ctx: typer.Context,
    connection: ConnectionFilter = None,
    state_: Annotated[
        str | None,
        typer.Option("--state", help="awaiting_publish, smime_unopened, action_pending or failed."),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOption = False,
) -> None:
    """List the queue (the default), or act on an entry with a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    params = _window(connection, since, until, limit, offset)
    if state_:
        params["state"] = state_
    emit(
        _call("GET", "/queue", params=params), as_json=as_json, columns=QUEUE_COLUMNS, title="queue"
    )


@queue_app.command("raw")
def queue_raw(
    kind: Annotated[str, typer.Argument(help="message or failed")],
    entry_id: int,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Download an entry's raw MIME (.eml) to a file or standard output."""
    raw = _call("GET", f"/queue/{kind}/{entry_id}/raw")
    if output is None:
        sys.stdout.buffer.write(raw)
    else:
        output.write_bytes(raw)
        console.print(f"{len(raw)} bytes written to {output}")


@queue_app.command("retry")
def queue_retry(kind: str, entry_id: int) -> None:
    """Redo the stuck step: publish, apply the server action, or download again."""
    console.print(_call("POST", f"/queue/{kind}/{entry_id}/retry")["detail"])


@queue_app.command("delete")
def queue_delete(
    kind: str,
    entry_id: int,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
) -> None:
    """Delete a stored message with its unpublished event, or dismiss a failed entry."""
    if not yes:
        typer.confirm(f"Delete queue entry {kind} {entry_id}?", abort=True)
    _call("DELETE", f"/queue/{kind}/{entry_id}")
    console.print(f"deleted {kind} {entry_id}")


# --- the log -------------------------------------------------------------------------------
POLL_COLUMNS = (
    "started_at",
    "connection_id",
    "outcome",
    "error_kind",
    "fetched",
    "stored",
    "duplicates",
    "bytes",
    "more_pending",
)
MESSAGE_COLUMNS = (
    "logged_at",
    "connection_id",
    "server_id",
    "outcome",
    "message_id",
    "published_at",
    "action_state",
)


@log_app.command("polls")
def log_polls(
    connection: ConnectionFilter = None,
    outcome: Annotated[str | None, typer.Option(help="ok, failed or skipped.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOption = False,
) -> None:
    """One line per poll: when, how it ended, what it downloaded and stored."""
    params = _window(connection, since, until, limit, offset)
    if outcome:
        params["outcome"] = outcome
    page = _call("GET", "/log/polls", params=params)
    emit(page, as_json=as_json, columns=POLL_COLUMNS, title="polls")


@log_app.command("messages")
def log_messages(
    connection: ConnectionFilter = None,
    outcome: Annotated[str | None, typer.Option(help="stored, duplicate or rejected.")] = None,
    poll_id: Annotated[str | None, typer.Option()] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOption = False,
) -> None:
    """One line per message received: stored, duplicate skipped or rejected; published and
    server action applied when they happened."""
    params = _window(connection, since, until, limit, offset)
    if outcome:
        params["outcome"] = outcome
    if poll_id:
        params["poll_id"] = poll_id
    page = _call("GET", "/log/messages", params=params)
    emit(page, as_json=as_json, columns=MESSAGE_COLUMNS, title="messages")


# --- OAuth2 credentials --------------------------------------------------------------------
CREDENTIAL_COLUMNS = ("id", "name", "provider", "client_id", "tenant", "scopes")


@credentials_app.command("list")
def list_credentials(as_json: JsonOption = False) -> None:
    """The stored OAuth2 credentials (secrets are never shown)."""
    page = _call("GET", "/oauth-credentials")
    emit(page, as_json=as_json, columns=CREDENTIAL_COLUMNS, title="OAuth2 credentials")


@credentials_app.command("create")
def create_credential(
    name: Annotated[str, typer.Option()],
    provider: Annotated[str, typer.Option(help="google or microsoft.")],
    client_id: Annotated[str, typer.Option()],
    tenant: Annotated[str | None, typer.Option(help="Microsoft: tenant id or domain.")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="Repeat for several; blank: the defaults.")
    ] = None,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the client secret from standard input.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Store a client id and secret (the secret is asked for, or read from standard input)."""
    secret = (
        sys.stdin.readline().rstrip("\n")
        if secret_stdin
        else _ask_secret("Client secret", "--secret-stdin")
    )
    body: dict[str, Any] = {
        "name": name,
        "provider": provider,
        "client_id": client_id,
        "client_secret": secret,
    }
    if tenant:
        body["tenant"] = tenant
    if scope:
        body["scopes"] = scope
    emit(_call("POST", "/oauth-credentials", json=body), as_json=as_json, title="created")


@credentials_app.command("delete")
def delete_credential(
    credential_id: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False
) -> None:
    """Delete a credential that no connection uses."""
    if not yes:
        typer.confirm(f"Delete OAuth2 credential {credential_id}?", abort=True)
    _call("DELETE", f"/oauth-credentials/{credential_id}")
    console.print(f"deleted {credential_id}")


# --- S/MIME certificates -------------------------------------------------------------------
CERTIFICATE_COLUMNS = ("id", "name", "alias", "subject", "not_after", "expired", "connections")


@certificates_app.command("list")
def list_certificates(
    search: Annotated[str | None, typer.Option("--search", "-q", help="Name or alias.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The stored certificates (keys are never shown)."""
    params = {"q": search} if search else {}
    page = _call("GET", "/certificates", params=params)
    emit(page, as_json=as_json, columns=CERTIFICATE_COLUMNS, title="certificates")


@certificates_app.command("upload")
def upload_certificate(
    name: Annotated[str, typer.Option()],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="PEM (certificate and key) or .p12")
    ],
    alias: Annotated[str | None, typer.Option()] = None,
    passphrase_stdin: Annotated[
        bool,
        typer.Option("--passphrase-stdin", help="Read the key's passphrase from standard input."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Store a certificate with its private key; a PKCS#12 file (.p12, .pfx) asks for its
    passphrase, a PEM one only with --passphrase-stdin."""
    data = file.read_bytes()
    pkcs12 = file.suffix.lower() in (".p12", ".pfx")
    passphrase = None
    if passphrase_stdin:
        passphrase = sys.stdin.readline().rstrip("\n")
    elif pkcs12:
        passphrase = _ask_secret("Passphrase", "--passphrase-stdin")
    body: dict[str, Any] = {"name": name, "alias": alias, "passphrase": passphrase or None}
    if pkcs12:
        body["pkcs12_base64"] = base64.b64encode(data).decode("ascii")
    else:
        body["pem"] = data.decode("utf-8", "replace")
    emit(_call("POST", "/certificates", json=body), as_json=as_json, title="stored")


@certificates_app.command("delete")
def delete_certificate(
    certificate_id: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False
) -> None:
    """Delete a certificate that no connection uses."""
    if not yes:
        typer.confirm(f"Delete certificate {certificate_id}?", abort=True)
    _call("DELETE", f"/certificates/{certificate_id}")
    console.print(f"deleted {certificate_id}")


@connections_app.command("certificates")
def connection_certificates(
    ref: ConnectionRef,
    use: Annotated[
        list[str] | None,
        typer.Option("--use", help="Replace the set with these certificate ids (repeat)."),
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove every certificate.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show, or set, the certificates a connection decrypts its mail with."""
    path = f"/connections/{_id(ref)}/certificates"
    if use or none:
        items = _call("PUT", path, json={"certificate_ids": [] if none else use})
    else:
        items = _call("GET", path)
    page = {"items": items, "total": len(items)}
    emit(page, as_json=as_json, columns=CERTIFICATE_COLUMNS, title="certificates")


# --- operations ----------------------------------------------------------------------------
@app.command("status")
def status_of_connections(
    problems_only: Annotated[
        bool, typer.Option("--problems", help="Only stalled or failing connections.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Each connection's health: last success, failures in a row, last error, stalled, and
    whether it is watched for new mail (since when, or why not), and mail downloaded that the
    store cannot write yet ("downloaded, waiting for the store: …"). Exit status 1 when an
    enabled connection is stalled or failing, or mail waits."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = _call("GET", "/connections", params={"limit": 500, "offset": offset})
        for item in page["items"]:
            health, watch = item["status"], item["watch"]
            waiting = health.get("waiting_for_store")
            failing = bool(waiting) or (
                item["enabled"] and (health["stalled"] or health["consecutive_failures"] > 0)
            )
            if problems_only and not failing:
                continue
            rows.append(
                {
                    "name": item["name"],
                    "enabled": item["enabled"],
                    "stalled": health["stalled"],
                    "last_success_at": health["last_success_at"],
                    "failures": health["consecutive_failures"],
                    "last_error_kind": health["last_error_kind"],
                    "messages_stored": health["messages_stored"],
                    "waiting_for_store": waiting,
                    "failing": failing,
                    "watched": watch["watched"],
                    "watch_since": watch["since"],
                    "watch": watch["state"] + (f": {watch['reason']}" if watch["reason"] else ""),
                }
            )
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    columns = (
        "name",
        "enabled",
        "stalled",
        "last_success_at",
        "failures",
        "last_error_kind",
        "waiting_for_store",
        "watched",
        "watch_since",
        "watch",
    )
    emit({"items": rows, "total": len(rows)}, as_json=as_json, columns=columns, title="status")
    if any(row["failing"] for row in rows):
        raise typer.Exit(1)


@app.command("replay")
def replay_messages(
    ref: ConnectionRef,
    since: Annotated[datetime, typer.Option(help="Stored at or after (ISO date or time).")],
    until: Annotated[datetime | None, typer.Option(help="Stored before (default: now).")] = None,
) -> None:
    """Announce a connection's stored messages again on mail.stored (same message ids)."""
    body: dict[str, Any] = {"since": since.isoformat()}
    if until is not None:
        body["until"] = until.isoformat()
    queued = _call("POST", f"/connections/{_id(ref)}/replay", json=body)
    console.print(f"{queued['messages']} messages queued for mail.stored")


@app.command("audit")
def audit_log(
    since: Annotated[datetime | None, typer.Option(help="From this time.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor (role:fingerprint).")] = None,
    limit: int = 50,
    as_json: JsonOption = False,
) -> None:
    """The audit log: every configuration change, who made it and when (admin token)."""
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since.isoformat()
    if actor:
        params["actor"] = actor
    page = _call("GET", "/audit", params=params)
    columns = ("at", "actor", "action", "target", "fields", "status")
    emit(page, as_json=as_json, columns=columns, title="audit log")
