"""The audit trail's part of the command line (hsmkms/cli.py hooks it in).

    hsmkms serve ... [--audit-file FILE] [--audit-stdout] [--audit-required]
                     [--audit-max-bytes N] [--audit-key-file FILE] [--audit-fsync S]
    hsmkms audit verify [FILE|DIR ...] [--key-file FILE] [--partial] [--home DIR] [--config F]

``audit verify`` checks the hash chain across the files given (a directory: its audit files,
rotated ones included), in the order of their first events; with no FILE, the configured
``audit_file`` and its rotated siblings. Exit status: 0 the chain is intact, 1 it is broken
(each break printed: which line, and whether a line was deleted, edited, reordered or cut
short), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_BROKEN = 1


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--audit-file",
        metavar="FILE",
        help="write one CloudTrail-shaped, hash-chained JSON event per request to FILE "
        "(relative: under the home; docs/audit.md)",
    )
    serve.add_argument(
        "--audit-stdout",
        action="store_true",
        default=None,
        help="write the audit events to stdout too (or only)",
    )
    serve.add_argument(
        "--audit-required",
        action="store_true",
        default=None,
        help="answer KMSInternalException (500) when no audit device can write the event",
    )
    serve.add_argument(
        "--audit-max-bytes",
        type=int,
        metavar="N",
        help="rotate the audit file past N bytes (default 100 MiB; 0: never)",
    )
    serve.add_argument(
        "--audit-key-file",
        metavar="FILE",
        help="0600 file holding the chain's HMAC key, made if missing (default: plain SHA-256)",
    )
    serve.add_argument(
        "--audit-fsync",
        type=float,
        metavar="S",
        help="seconds between fsyncs of the audit file (default 1; 0: after every event)",
    )


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the audit flags of ``serve`` give (None: not given)."""
    return {
        "audit_file": args.audit_file,
        "audit_stdout": args.audit_stdout,
        "audit_required": args.audit_required,
        "audit_max_bytes": args.audit_max_bytes,
        "audit_key_file": args.audit_key_file,
        "audit_fsync": args.audit_fsync,
    }


def add_parser(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail: verify its hash chain")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="check that no audit event was deleted, edited or reordered",
        description="Check the hash chain of audit files. Exit 0 when intact, 1 when broken "
        "(each break is printed), 2 on usage errors.",
    )
    verify.add_argument(
        "paths",
        nargs="*",
        metavar="FILE|DIR",
        help="audit files, or directories of them, in any order (default: the audit_file "
        "setting's file and its rotated siblings)",
    )
    verify.add_argument(
        "--key-file", metavar="FILE", help="the chain's HMAC key (default: audit_key_file)"
    )
    verify.add_argument(
        "--partial",
        action="store_true",
        help="the first event may continue a chain whose earlier files were removed",
    )
    verify.add_argument("--home", help="state directory (default $HSMKMS_HOME or ./var)")
    verify.add_argument("--config", metavar="FILE", help="TOML settings file")
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from hsmkms.audit.chain import audit_files, verify
    from hsmkms.audit.sinks import read_key
    from hsmkms.config import ConfigError, Settings

    settings = Settings.load(args.config, home=args.home)
    paths = [Path(p) for p in args.paths]
    if not paths:
        configured = settings.audit_path
        if configured is None:
            raise ConfigError("no audit file given, and no audit_file setting names one")
        paths = [configured]
        paths += sorted(configured.parent.glob(configured.name + ".[0-9]*"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)}")
    key_path = Path(args.key_file) if args.key_file else settings.audit_key_path
    if key_path is not None and not key_path.exists():
        raise ConfigError(f"no audit key file {key_path}")
    key = read_key(key_path) if key_path is not None else None
    files, skipped = audit_files(paths)
    report = verify(files, key=key, partial=args.partial)
    report.skipped = skipped
    print("\n".join(report.lines()))
    sys.stdout.flush()
    return 0 if report.ok else EXIT_BROKEN
