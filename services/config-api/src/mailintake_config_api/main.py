"""Console entry point ``mailintake-config-api``.

mailintake-config-api              serve the API (uvicorn) on MAILINTAKE_HTTP_HOST:PORT
mailintake-config-api hash-token   print a new token and the settings entry for it
mailintake-config-api openapi      print the OpenAPI document
mailintake-config-api backup       print the configuration as JSON (secrets stay encrypted)
mailintake-config-api restore F    restore a backup (upsert by id: safe to run twice), judged
                                   by the API's rules; a secret restores only with its row
"""

from __future__ import annotations

import argparse
import json
import sys

from mailintake_config_api.app import create_app
from mailintake_config_api.auth import hash_token, new_token
from mailintake_config_api.backup import PARTS, BackupError, backup, restore
from mailintake_shared.logging import configure_logging
from mailintake_shared.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mailintake-config-api", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    hashing = commands.add_parser("hash-token", help="make an API token and its settings entry")
    hashing.add_argument("--role", choices=["admin", "reader", "viewer"], default="admin")
    hashing.add_argument("--token", help="hash this token instead of making a new one")
    commands.add_parser("openapi", help="print the OpenAPI document")
    parts = ", ".join(PARTS)
    saving = commands.add_parser("backup", help="print the configuration as JSON")
    saving.add_argument("--only", help=f"comma-separated parts: {parts} (default: all)")
    restoring = commands.add_parser("restore", help="restore a backup made by `backup`")
    restoring.add_argument("file", help="the backup's JSON file, or - for standard input")
    restoring.add_argument("--only", help=f"comma-separated parts: {parts} (default: all)")
    restoring.add_argument(
        "--bind-unbound-secrets",
        action="store_true",
        help="a backup of an earlier version, whose secrets are not bound to their "
        "destinations yet: bind them to the destinations the file names (only for a file "
        "known unchanged since it was taken)",
    )
    args = parser.parse_args(argv)

    if args.command == "hash-token":
        token = args.token or new_token()
        if not args.token:
            print(f"token:          {token}")
        print(f"settings entry: {args.role}:{hash_token(token)}")
        return
    if args.command == "openapi":
        json.dump(create_app().openapi(), sys.stdout, indent=2, sort_keys=True)
        print()
        return

    if args.command in ("backup", "restore"):
        sys.exit(_backup_or_restore(args))

    import uvicorn

    settings = Settings()
    configure_logging(settings.log_level, service="config-api")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=True,
        forwarded_allow_ips=settings.api_forwarded_allow_ips,
    )


def _backup_or_restore(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from mailintake_shared.db.engine import make_engine, make_session_factory
    from mailintake_shared.secretbox import SecretBox

    settings = Settings()
    configure_logging(settings.log_level, service="config-api", stream=sys.stderr)
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(PARTS)
    if unknown := set(parts) - set(PARTS):
        print(f"unknown part(s): {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
        return 2
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    try:
        if args.command == "backup":
            with sessions() as session:
                json.dump(backup(session, parts), sys.stdout, indent=1)
            print()
            return 0
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()  # noqa: SIM115
        box = SecretBox(settings.encryption_keys)
        try:  # one transaction: a refused restore changes nothing
            document = json.loads(text)
            if not isinstance(document, dict):
                raise BackupError("not a backup: the file holds no JSON object")
            with sessions() as session, session.begin():
                done = restore(
                    session, settings, box, document, parts, bind_unbound=args.bind_unbound_secrets
                )
        except json.JSONDecodeError as exc:
            print(f"restore refused: not JSON ({exc})", file=sys.stderr)
            return 1
        except BackupError as exc:
            print(f"restore refused: {exc}", file=sys.stderr)
            return 1
        except IntegrityError as exc:  # e.g. connections without their credentials
            print(
                "restore refused: a row refers to one that is neither in the database "
                f"nor restored (add that part to --only): {exc.orig}",
                file=sys.stderr,
            )
            return 1
        rows = ", ".join(f"{n} {table}" for table, n in done.rows.items())
        print(f"restored {rows}; {done.connections_announced} connections announced")
        return 0
    finally:
        engine.dispose()
