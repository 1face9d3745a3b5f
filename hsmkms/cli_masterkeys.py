"""``hsmkms migrate --master-keys token|wrapped`` and ``hsmkms domain-key rotate|status``: move
a home between the master-key modes, and rotate the wrapped mode's domain key (the logic is
hsmkms/modes/migrate.py; docs/master-keys.md). Every run can be interrupted (even kill -9) and
run again: it resumes. Exit status: 0 done, 1 failed or unfinished (run it again), 2 usage, 3
could not run (token or store unreachable, another run holds the home)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hsmkms.cli_doctor import add_home_arguments, existing_home
from hsmkms.config import ConfigError, Settings

if TYPE_CHECKING:
    from hsmkms.modes.migrate import Rotation, ToToken
    from hsmkms.modes.wrapped import WrappedMaterials
    from hsmkms.store import Store

EXIT_OK, EXIT_FAILURE, EXIT_UNCHECKED = 0, 1, 3  # as hsmkms/cli.py says
LOCK_FILE = "master-keys.lock"  # in the home: one migrate or rotate at a time
TOKEN_MODE = 'master_keys = "token" (--master-keys token, HSMKMS_MASTER_KEYS=token)'
WRAPPED_MODE = 'master_keys = "wrapped" (--master-keys wrapped, HSMKMS_MASTER_KEYS=wrapped)'


class Unchecked(Exception):
    """The command could not run (exit 3): the message says why."""


def register(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="move a home between the master-key modes: wrapped materials onto the token, or "
        "a token home to the wrapped mode",
        description="--master-keys token: move every wrapped key material onto the token as a "
        "token object, then destroy the domain keys (restart the servers with master_keys = "
        '"token" first: they serve the wraps left meanwhile). --master-keys wrapped: give the '
        "home an active domain key; new materials are then wrapped, existing token objects "
        "stay (never extractable: nothing can wrap them out). Safe to interrupt and run again.",
    )
    add_home_arguments(migrate)
    migrate.add_argument(
        "--master-keys",
        dest="target",
        required=True,
        choices=("token", "wrapped"),
        help="the mode to move the home to",
    )
    _batch(migrate)
    migrate.set_defaults(handler=cmd_migrate)

    domain = commands.add_parser(
        "domain-key", help="the wrapped mode's domain key: rotate it, or show its state"
    )
    verbs = domain.add_subparsers(dest="domain_command", metavar="VERB", required=True)
    rotate = verbs.add_parser(
        "rotate",
        help="make a new domain key and rewrap every key material under it",
        description="Make a new domain key (the old one retires), rewrap every wrapped key "
        "material under it a batch per store transaction, then destroy the old key. Old "
        "ciphertexts decrypt throughout. Run again while a rotation is unfinished, it resumes "
        "that one and makes no key.",
    )
    add_home_arguments(rotate)
    _batch(rotate)
    rotate.add_argument(
        "--background",
        action="store_true",
        help="only make the new key: the running servers' scheduler rewraps and destroys the "
        "old key (hsmkms domain-key status shows how far it got)",
    )
    rotate.set_defaults(handler=cmd_rotate)
    status = verbs.add_parser(
        "status", help="the domain keys: state, wraps under each, whether the token holds it"
    )
    add_home_arguments(status)
    status.add_argument("--json", action="store_true", help="print the list as JSON")
    status.set_defaults(handler=cmd_status)


def _batch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch",
        type=int,
        default=256,
        metavar="N",
        help="key materials per step, each step's store writes one transaction (default 256)",
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _short(domain_id: str) -> str:
    return f"{domain_id[:16]}..."


# -- opening ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(
    args: argparse.Namespace, new_materials: str | None, *, lock: bool = True
) -> Iterator[tuple[Settings, WrappedMaterials, Store]]:
    """The home's settings, its token and store as the wrapped mode's, under the home's lock."""
    from hsmkms import compose, hsm
    from hsmkms.modes.wrapped import WrappedMaterials
    from hsmkms.store import StoreError

    if getattr(args, "batch", 1) < 1:
        raise ConfigError("--batch must be at least 1")
    settings = existing_home(args)
    with contextlib.ExitStack() as stack:
        if lock:
            stack.enter_context(_home_lock(settings))
        label = settings.token_label
        try:
            token = compose.open_token(settings)
        except hsm.LoginFailed:
            raise Unchecked(f"token '{label}' refused the PIN (not retried)") from None
        except hsm.TokenError as exc:
            raise Unchecked(f"cannot open token '{label}': {exc}") from None
        stack.callback(token.close)
        try:
            store = compose.open_metadata(settings)
        except StoreError as exc:
            raise Unchecked(f"cannot open the store: {exc}") from None
        stack.callback(store.close)
        masters = WrappedMaterials(
            token, store, token_pairs=settings.keypair_source == "token",
            new_materials=new_materials or settings.master_keys,
        )  # fmt: skip
        yield settings, masters, store


@contextlib.contextmanager
def _home_lock(settings: Settings) -> Iterator[None]:
    import fcntl

    path = settings.home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Unchecked(
                f"another hsmkms migrate or domain-key rotate is running on {settings.home} "
                f"(it holds {path}): wait for it"
            ) from None
        yield
    finally:
        os.close(fd)


def _run(name: str, body: Any, args: argparse.Namespace) -> int:
    """``body(args)`` with the failures every command words alike."""
    from hsmkms import hsm
    from hsmkms.modes.migrate import MigrationRefused
    from hsmkms.store import StoreError

    try:
        return int(body(args))
    except Unchecked as exc:
        print(f"hsmkms {name}: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    except MigrationRefused as exc:
        print(f"hsmkms {name}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (hsm.TokenError, StoreError) as exc:
        print(
            f"hsmkms {name}: stopped: {exc}. Nothing is lost; run it again to resume",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"hsmkms {name}: interrupted; nothing is lost, run it again to resume",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE


# -- migrate ---------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    return _run("migrate", _migrate_to_token if args.target == "token" else _migrate_to_wrapped,
                args)  # fmt: skip


def _migrate_to_token(args: argparse.Namespace) -> int:
    from hsmkms.modes import migrate

    with _opened(args, "token") as (settings, masters, store):
        _note_setting(settings, "token")
        _say(
            f"moving the wrapped key materials of {settings.home} onto token "
            f"'{settings.token_label}', {args.batch} per step. Servers running? They must run "
            f'with master_keys = "token" before the move: they serve the wraps left meanwhile, '
            "and one still in the wrapped mode makes new wraps"
        )
        said = {""}

        def progress(counts: ToToken) -> None:
            done = counts.moved + counts.deleted_meanwhile
            line = f"moved {done} of {counts.to_move} ({counts.left} wraps left)"
            if counts.domain_keys_destroyed:
                line = f"domain keys destroyed: {counts.domain_keys_destroyed}"
            if line not in said:
                said.add(line)
                _say(line)

        counts = migrate.to_token(
            masters, store, batch=args.batch, max_objects=settings.token_max_objects,
            progress=progress,
        )  # fmt: skip
        return _to_token_summary(counts)


def _to_token_summary(counts: ToToken) -> int:
    extra = []
    if counts.resumed:
        extra.append(f"{counts.resumed} were on the token already, left by an interrupted run")
    if counts.remade:
        extra.append(f"{counts.remade} half-made token objects made again")
    _say(
        f"moved {counts.moved} key materials onto the token"
        + (f" ({'; '.join(extra)})" if extra else "")
        + f"; {counts.token_objects} were token objects before; "
        f"{counts.domain_keys_destroyed} domain keys destroyed"
    )
    if counts.deleted_meanwhile:
        _say(
            f"{counts.deleted_meanwhile} materials were deleted (their key's deletion) while "
            "they moved: their token objects are orphans, which hsmkms doctor --fix destroys"
        )
    for material_id, why in sorted(counts.failed.items())[:20]:
        _say(f"FAILED: key material {material_id} could not move: {why}")
    if counts.failed:
        _say(
            f"{len(counts.failed)} wraps could not move; they stay in the store and keep "
            "serving (as do the domain keys). hsmkms doctor --deep checks them; run this again "
            "once fixed"
        )
        return EXIT_FAILURE
    if counts.left or counts.domain_keys_left:
        _say(
            f"{counts.left} wraps came meanwhile: a server still runs with master_keys = "
            f'"wrapped". Restart every server with {TOKEN_MODE}, then run this again'
        )
        return EXIT_FAILURE
    _say(
        "done: the store holds no wraps and the token no domain key. Every server runs with "
        f"{TOKEN_MODE} from now on"
    )
    return EXIT_OK


def _migrate_to_wrapped(args: argparse.Namespace) -> int:
    from hsmkms.modes import migrate

    with _opened(args, "wrapped") as (settings, masters, store):
        _note_setting(settings, "wrapped")
        done = migrate.to_wrapped(masters, store, batch=args.batch, progress=_rotation_progress)
        if done.made:
            _say(
                f"domain key {_short(done.domain_id)} made: new key materials are wrapped under it"
            )
        else:
            _say(f"domain key {_short(done.domain_id)} is active already")
        if done.rotation is not None:
            _say(_rotation_line(done.rotation))
        total = sum(done.stay.values())
        if total:
            _say(
                f"{total} key materials stay token objects and keep serving their ciphertexts, "
                "signatures and MACs (a rotation of their key makes a wrapped material):"
            )
            for reason, n in sorted(done.stay.items()):
                _say(f"  {n} {migrate.STAYS[reason]}")
        _say(f"{done.wraps} wrapped key materials in the store")
        _say(
            f"done. Run every server with {WRAPPED_MODE}: from then on each new key material "
            "(CreateKey, rotations) is a wrap. Either order is safe; migrating first makes the "
            "domain key once, before several servers could each make one"
        )
        return EXIT_OK if done.rotation is None or done.rotation.finished else EXIT_FAILURE


def _note_setting(settings: Settings, target: str) -> None:
    if settings.master_keys != target:
        _say(
            f'note: the settings given say master_keys = "{settings.master_keys}": the servers '
            f'must run with "{target}" (change their configuration)'
        )


# -- domain-key ------------------------------------------------------------------------------


def cmd_rotate(args: argparse.Namespace) -> int:
    return _run("domain-key rotate", _rotate, args)


def _rotate(args: argparse.Namespace) -> int:
    from hsmkms.modes import migrate

    with _opened(args, None) as (settings, masters, store):
        if not store.domain_keys() and settings.master_keys != "wrapped":
            raise migrate.MigrationRefused(
                "this home has no domain key: it keeps its key materials as token objects "
                '(master_keys = "token"). hsmkms migrate --master-keys wrapped gives it one'
            )
        rotation = migrate.rotate(masters, store, batch=args.batch, background=True)
        old = ", ".join(_short(d) for d in rotation.previous) or "none"
        if rotation.made:
            _say(
                f"domain key {_short(rotation.domain_id)} made and active; {rotation.left} wraps "
                f"to rewrap from the retiring domain key(s) {old}"
            )
        else:
            _say(
                f"a rotation is unfinished: resuming it, no new domain key made; "
                f"{rotation.left} wraps still under the retiring domain key(s) {old}, to "
                f"rewrap under {_short(rotation.domain_id)}"
            )
        if args.background:
            _say(
                "the running servers' scheduler rewraps them (its next round, within "
                "scheduler_interval) and destroys the old key at the end; hsmkms domain-key "
                "status shows how far it got, hsmkms domain-key rotate finishes it here"
            )
            return EXIT_OK
        migrate.finish_rotation(
            masters, store, rotation, batch=args.batch, progress=_rotation_progress
        )
        _say(_rotation_line(rotation))
        if not rotation.finished:
            return EXIT_FAILURE
        _say("back up the token now: it holds the new domain key (docs/deployment.md)")
        return EXIT_OK


def _rotation_progress(rotation: Rotation) -> None:
    _say(
        f"rewrapped {rotation.moved} ({rotation.left} left), "
        f"{rotation.destroyed} old domain keys destroyed"
    )


def _rotation_line(rotation: Rotation) -> str:
    if rotation.finished:
        return (
            f"done: {rotation.moved} wraps rewrapped under domain key "
            f"{_short(rotation.domain_id)}; {rotation.destroyed} old domain keys destroyed"
        )
    return (
        f"unfinished: {rotation.left} wraps still under a retiring domain key (another process "
        "holds them, or no domain key is active); run hsmkms domain-key rotate again"
    )


def cmd_status(args: argparse.Namespace) -> int:
    return _run("domain-key status", _status, args)


def _status(args: argparse.Namespace) -> int:
    from hsmkms.modes import migrate

    with _opened(args, None, lock=False) as (_settings, masters, store):
        keys = migrate.domain_status(masters, store)
        wraps = store.count_wraps()
    lost = [k for k in keys if k.wraps and not k.on_token]
    if args.json:
        print(json.dumps({
            "domain_keys": [
                {"domain_id": k.domain_id, "state": k.state, "wraps": k.wraps,
                 "on_token": k.on_token,
                 "created": k.created_at.isoformat() if k.created_at else None}
                for k in keys
            ],
            "wraps": wraps,
        }, indent=2))  # fmt: skip
        return EXIT_FAILURE if lost else EXIT_OK
    if not keys:
        _say("no domain key: the home keeps its key materials as token objects")
    for k in keys:
        made = k.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") if k.created_at else "?"
        where = "on the token" if k.on_token else "NOT ON THE TOKEN"
        _say(f"domain key {k.domain_id}  {k.state:<9}  made {made}  {k.wraps} wraps  {where}")
    _say(f"{wraps} wrapped key materials in the store")
    if any(k.state == "on the token only" for k in keys):
        _say(
            "on the token only: a domain key no record of this store names (a rotation "
            "interrupted before it recorded the key, or another home's on the same token); "
            "harmless, nothing is wrapped under it here"
        )
    if any(k.state in ("retiring", "retired") for k in keys):
        left = sum(k.wraps for k in keys if k.state == "retiring")
        _say(
            f"a rotation is unfinished ({left} wraps left): the servers' scheduler finishes it, "
            "or hsmkms domain-key rotate (it resumes)"
        )
    for k in lost:
        _say(
            f"MISSING: domain key {_short(k.domain_id)} is not on the token and {k.wraps} "
            "materials are wrapped under it: restore it (from a token backup), or check "
            "--token-label"
        )
    return EXIT_FAILURE if lost else EXIT_OK
