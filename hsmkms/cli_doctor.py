"""``hsmkms doctor``: cross-check the store and where the key materials live
(:mod:`hsmkms.service.doctor`), beside a running server or not. Exit status: 0 consistent
(orphans, which are harmless, may be listed), 1 drift (key material the store records is
missing, or a material could leak), 2 usage, 3 the check could not run."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hsmkms.config import ConfigError, Settings

EXIT_DRIFT, EXIT_UNCHECKED = 1, 3  # as hsmkms/cli.py says


def token_profile(masters: Any, settings: Settings) -> dict[str, str]:
    from hsmkms.hsm.profile import profile

    return profile(masters.token, settings) if hasattr(masters, "token") else {}


def add_home_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a command on an existing home (doctor, migrate, domain-key)."""
    parser.add_argument("--home", help="state directory (default $HSMKMS_HOME or ./var)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--store", metavar="LOCATION", help="the metadata store, as serve's")
    parser.add_argument("--pkcs11-module", metavar="PATH", help="PKCS#11 library to load")
    parser.add_argument("--token-label", metavar="LABEL", help="label of the token to use")
    parser.add_argument("--hsm", choices=("softhsm2", "nss"), help="the home's software token")


def existing_home(args: argparse.Namespace) -> Settings:
    """The settings :func:`add_home_arguments` name, of a home whose store exists."""
    from hsmkms.home import use_home

    settings = use_home(
        Settings.load(
            args.config,
            home=args.home,
            store=args.store,
            pkcs11_module=args.pkcs11_module,
            token_label=args.token_label,
            hsm=args.hsm,
        )
    )
    store_path = settings.store_path
    if "://" not in store_path and not os.path.exists(store_path):
        raise ConfigError(f"no store at {store_path}: is --home right?")
    return settings


def register(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="cross-check the store and the token: missing key material, orphan master keys",
        description="Cross-check the metadata store and the token. Exit 0 when consistent, "
        "1 on drift (key material missing from the token, or extractable), 3 when the check "
        "could not run. Safe beside a running server.",
    )
    add_home_arguments(doctor)
    doctor.add_argument(
        "--fix",
        action="store_true",
        help="destroy orphan master keys (on the token, named by no key record) older than "
        "--min-age",
    )
    doctor.add_argument(
        "--min-age",
        type=float,
        metavar="SECONDS",
        default=3600.0,
        help="the safety margin of --fix (default 3600): a younger orphan may be a key "
        "being created right now",
    )
    doctor.add_argument(
        "--deep",
        action="store_true",
        help="also read every master key's attributes and try to extract it (a sound key refuses)",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    import json
    from datetime import timedelta

    from hsmkms import compose, hsm
    from hsmkms.service import doctor
    from hsmkms.store import StoreError

    if args.min_age < 0:
        raise ConfigError("--min-age must be >= 0 seconds")
    settings = existing_home(args)
    label = settings.token_label
    try:
        token = compose.open_token(settings)
    except hsm.LoginFailed:
        print(f"hsmkms doctor: token '{label}' refused the PIN (not retried)", file=sys.stderr)
        return EXIT_UNCHECKED
    except hsm.TokenError as exc:
        print(f"hsmkms doctor: cannot open token '{label}': {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    try:
        store = compose.open_metadata(settings)
        try:
            masters = compose.master_keys(settings, token, store)
            report = doctor.check(
                store,
                masters,
                fix=args.fix,
                min_age=timedelta(seconds=args.min_age),
                deep=args.deep,
            )
            report.token = token_profile(masters, settings)
        finally:
            store.close()
    except (hsm.TokenError, StoreError) as exc:
        print(f"hsmkms doctor: the check could not finish: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    finally:
        token.close()  # what closing either mode's master keys does
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_DRIFT if report.drift else 0
