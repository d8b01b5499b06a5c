"""Console entry point ``mailintake-config-api``.

mailintake-config-api              serve the API (uvicorn) on MAILINTAKE_HTTP_HOST:PORT
mailintake-config-api hash-token   print a new token and the settings entry for it
mailintake-config-api openapi      print the OpenAPI document
"""

from __future__ import annotations

import argparse
import json
import sys

from mailintake_config_api.app import create_app
from mailintake_config_api.auth import hash_token, new_token
from mailintake_shared.logging import configure_logging
from mailintake_shared.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mailintake-config-api", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    hashing = commands.add_parser("hash-token", help="make an API token and its settings entry")
    hashing.add_argument("--role", choices=["admin", "viewer"], default="admin")
    hashing.add_argument("--token", help="hash this token instead of making a new one")
    commands.add_parser("openapi", help="print the OpenAPI document")
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
