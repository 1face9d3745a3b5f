"""``hsmkms store copy --from LOCATION --to LOCATION``: move a store to another backend
(:mod:`hsmkms.store.copy`), e.g. an embedded home's SQLite file to PostgreSQL."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hsmkms.store import StoreError, open_store
from hsmkms.store.base import redacted

EXIT_OK, EXIT_FAILED = 0, 1


def register(commands: Any) -> None:
    store = commands.add_parser("store", help="operate on the metadata store")
    verbs = store.add_subparsers(dest="store_command", metavar="VERB", required=True)
    copy = verbs.add_parser(
        "copy",
        help="copy every key, material record, alias, tag, grant and tombstone into an empty "
        "store (e.g. SQLite to PostgreSQL)",
        description="Copy a store into an empty one, in one transaction, then count every "
        "table on both sides. Stop the servers writing to the source first. The token is not "
        "touched: keep using the token the source's home used.",
    )
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="LOCATION",
        help="the source: a SQLite file (or sqlite:///path) or postgresql:// URL",
    )
    copy.add_argument(
        "--to",
        dest="destination",
        required=True,
        metavar="LOCATION",
        help="the destination, empty: a postgresql:// URL or a SQLite file",
    )
    copy.set_defaults(handler=cmd_store_copy)


def cmd_store_copy(args: argparse.Namespace) -> int:
    from hsmkms.store.copy import copy_store

    try:
        source = open_store(args.source)
    except StoreError as exc:
        print(f"hsmkms store copy: cannot open {redacted(args.source)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        destination = open_store(args.destination)
    except StoreError as exc:
        source.close()
        print(f"hsmkms store copy: cannot open {redacted(args.destination)}: {exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    try:
        copied = copy_store(source, destination)
    except StoreError as exc:
        print(f"hsmkms store copy: nothing copied: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        destination.close()
        source.close()
    rows = ", ".join(f"{table} {n}" for table, n in copied.counts.items())
    print(f"copied {redacted(args.source)} to {redacted(args.destination)}: {rows}")
    return EXIT_OK
