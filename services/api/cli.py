"""``python -m services.api keys create --name NAME [--scope read --scope write]``, ``keys list``,
``keys revoke ID``: API keys, in the database of ``EGX_DB_URL`` (the local stack's by default). The token is
written once, to standard output, and stored nowhere (only its argon2id hash is)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from earthgptx.settings import DatabaseSettings, load_stack_env
from earthgptx.store.db import make_engine
from services.api.security import SCOPES, KeyStore


def keys_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api keys", description="manage API keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="issue a key; the token is shown once")
    create.add_argument("--name", required=True, help="who holds the key (its owner)")
    create.add_argument("--scope", action="append", choices=SCOPES, help="read and/or write (default: both)")
    sub.add_parser("list", help="list keys (never their tokens)")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    args = parser.parse_args(list(argv))

    load_stack_env()
    engine = make_engine(DatabaseSettings())  # type: ignore[call-arg]
    store = KeyStore(engine)
    try:
        if args.command == "create":
            issued = store.create(args.name, args.scope or SCOPES)
            sys.stderr.write(f"key {issued.key_id} for {args.name}; the token below is shown only once\n")
            sys.stdout.write(issued.token + "\n")
        elif args.command == "list":
            for row in store.list():
                revoked = f" revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else ""
                sys.stdout.write(f"{row['id']}\t{row['owner']}\t{','.join(row['scopes'])}{revoked}\n")  # type: ignore[arg-type]
        elif not store.revoke(args.key_id):
            sys.stderr.write(f"no active key {args.key_id}\n")
            return 1
        return 0
    finally:
        engine.dispose()
