"""The embedded default: a state directory holding a SoftHSM2 token, the SQLite store and the
credentials, created on first run and reused after.

Layout of ``<home>`` (mode 0700)::

    softhsm2.conf    SoftHSM2 configuration pointing at tokens/
    tokens/          the SoftHSM2 token directory
    user.pin         the token user PIN (0600)
    so.pin           the token security officer PIN (0600)
    credentials      AWS shared-credentials INI, profile [hsmkms] (0600); also read by the
                     server for access key id -> secret, account and principal; and [xks],
                     the XKS proxy API's credential (docs/xks.md), which the KMS API refuses
    hsmkms.sqlite3   the metadata store
    nssdb/           instead of softhsm2.conf and tokens/ with ``hsm = "nss"``: NSS's
                     softoken database (certutil -N), its password the user PIN
"""

from __future__ import annotations

import base64
import configparser
import fcntl
import logging
import os
import secrets
import shutil
import string
import subprocess
from pathlib import Path

from hsmkms.config import ConfigError, Settings
from hsmkms.identity import Identity

PROFILE = "hsmkms"
# The XKS proxy API's credential; [xks-<name>] profiles beside it during a rotation.
XKS_PROFILE = "xks"

log = logging.getLogger("hsmkms.home")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _random_token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_identity(account_id: str | None = None, name: str = "admin") -> Identity:
    account = account_id or "".join(secrets.choice(string.digits) for _ in range(12))
    return Identity(
        access_key_id="AKIA" + _random_token(16, string.ascii_uppercase + "234567"),
        secret_access_key=_random_token(40, string.ascii_letters + string.digits + "+/"),
        account_id=account,
        principal_arn=f"arn:aws:iam::{account}:user/{name}",
    )


def write_credentials(path: Path, identities: dict[str, Identity], region: str) -> None:
    """Write an AWS shared-credentials file that boto3/the AWS CLI read and the server trusts."""
    parser = configparser.ConfigParser(interpolation=None)
    for profile, ident in identities.items():
        parser[profile] = {
            "aws_access_key_id": ident.access_key_id,
            "aws_secret_access_key": ident.secret_access_key,
            "region": region,
            "hsmkms_account_id": ident.account_id,
            "hsmkms_principal_arn": ident.principal_arn,
        }
    lines: list[str] = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in parser[section].items())
        lines.append("")
    _write_private(path, "\n".join(lines))


def add_profile(path: Path, profile: str, identity: Identity, region: str) -> None:
    """Add (or replace) one profile of a credentials file, keeping the others: another
    principal or account the server trusts (it reads the file when it starts)."""
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        with open(path) as fh:
            parser.read_file(fh)
    identities: dict[str, Identity] = {}
    for section in parser.sections():
        sec = parser[section]
        if sec.get("aws_access_key_id") and sec.get("aws_secret_access_key"):
            account = sec.get("hsmkms_account_id", "000000000000")
            identities[section] = Identity(
                sec["aws_access_key_id"],
                sec["aws_secret_access_key"],
                account,
                sec.get("hsmkms_principal_arn", f"arn:aws:iam::{account}:root"),
            )
    identities[profile] = identity
    write_credentials(path, identities, region)


def read_credentials(path: Path) -> dict[str, Identity]:
    """access key id -> Identity, from an AWS shared-credentials INI with hsmkms_* members."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    out: dict[str, Identity] = {}
    for section in parser.sections():
        if is_xks_profile(section):
            continue  # AWS KMS's key to the XKS API, not a principal of the KMS API
        sec = parser[section]
        akid = sec.get("aws_access_key_id")
        secret = sec.get("aws_secret_access_key")
        if not akid or not secret:
            continue
        account = sec.get("hsmkms_account_id", "000000000000")
        principal = sec.get("hsmkms_principal_arn", f"arn:aws:iam::{account}:root")
        out[akid] = Identity(akid, secret, account, principal)
    if not out:
        raise ConfigError(f"credentials file {path} holds no access key")
    return out


def is_xks_profile(profile: str) -> bool:
    """Whether a profile of the credentials file is a credential of the XKS proxy API:
    ``[xks]``, and ``[xks-<name>]`` beside it while the credential is rotated (docs/xks.md)."""
    return profile == XKS_PROFILE or profile.startswith(XKS_PROFILE + "-")


def new_xks_identity(account_id: str) -> Identity:
    """An XKS credential as the spec's Appendix A asks: an access key id of 26 characters of
    A-Z and 2-7 that says nothing of the secret, and a secret of 256 random bits (Base64)."""
    return Identity(
        access_key_id=_random_token(26, string.ascii_uppercase + "234567"),
        secret_access_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        account_id=account_id,
        principal_arn=f"arn:aws:iam::{account_id}:user/xks",
    )


def read_xks_credentials(path: Path) -> dict[str, tuple[Identity, str]]:
    """access key id -> (Identity, its ``region`` or ""), of the file's XKS profiles."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    out: dict[str, tuple[Identity, str]] = {}
    for section in filter(is_xks_profile, parser.sections()):
        sec = parser[section]
        akid = sec.get("aws_access_key_id")
        secret = sec.get("aws_secret_access_key")
        if akid and secret:
            account = sec.get("hsmkms_account_id", "000000000000")
            principal = sec.get("hsmkms_principal_arn", f"arn:aws:iam::{account}:user/xks")
            out[akid] = (Identity(akid, secret, account, principal), sec.get("region", ""))
    return out


def ensure_xks_profile(path: Path, region: str) -> None:
    """Give the credentials file an ``[xks]`` profile unless it has an XKS profile already:
    the account of its first profile, ``region``. Appended under an flock, not rewritten: the
    file's other lines stay as they are, and workers starting together add one profile."""
    try:
        with open(path, "r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            text = fh.read()
            parser = configparser.ConfigParser(interpolation=None)
            try:
                parser.read_string(text)
            except configparser.Error:
                return  # read_credentials says what is wrong with it
            if any(is_xks_profile(s) for s in parser.sections()):
                return
            accounts = [
                parser[s].get("hsmkms_account_id", "000000000000")
                for s in parser.sections()
                if parser[s].get("aws_access_key_id")
            ]
            account = accounts[0] if accounts else new_identity().account_id
            ident = new_xks_identity(account)
            fh.write(
                ("\n" if text and not text.endswith("\n") else "")
                + "\n# The XKS proxy API's credential, which AWS KMS signs with (docs/xks.md). "
                "To rotate it,\n# add [xks-2] beside it, give AWS KMS the new one, then remove "
                "the old profile:\n# the server reads this file again within a second.\n"
                f"[{XKS_PROFILE}]\n"
                f"aws_access_key_id = {ident.access_key_id}\n"
                f"aws_secret_access_key = {ident.secret_access_key}\n"
                f"region = {region}\n"
                f"hsmkms_account_id = {ident.account_id}\n"
                f"hsmkms_principal_arn = {ident.principal_arn}\n"
            )
    except OSError as exc:
        log.warning("could not add an [xks] profile to %s: %s", path, exc.strerror)


def softhsm_util() -> str:
    path = shutil.which("softhsm2-util")
    if not path:
        raise ConfigError(
            "softhsm2-util not found: install SoftHSM2 (Debian: apt-get install softhsm2) "
            "or point --pkcs11-module/--token-label at your HSM"
        )
    return path


def ensure_home(settings: Settings) -> Settings:
    """Create the embedded default under ``settings.home`` if missing; point SoftHSM2 at it.

    Idempotent: a second run reuses the token, PINs, store and credentials. Sets
    ``SOFTHSM2_CONF`` in this process's environment (before the PKCS#11 library is loaded)
    unless the settings name an explicit configuration.
    """
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)

    conf = settings.softhsm_conf_path
    embedded = settings.softhsm_conf is None and "softhsm" in settings.pkcs11_module
    if settings.hsm == "nss" and settings.pkcs11_init_args is None:
        init_nss_db(home / "nssdb", settings.pin_path)
    elif embedded:
        tokens = home / "tokens"
        tokens.mkdir(exist_ok=True)
        os.chmod(tokens, 0o700)
        if not conf.exists():
            _write_private(
                conf,
                f"directories.tokendir = {tokens.resolve()}\n"
                "objectstore.backend = file\n"
                "log.level = ERROR\n"
                "slots.removable = false\n",
            )
        os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
        pin_path = settings.pin_path
        if not any(tokens.iterdir()):
            user_pin = _random_token(24)
            so_pin = _random_token(24)
            _write_private(pin_path, user_pin + "\n")
            _write_private(home / "so.pin", so_pin + "\n")
            init_softhsm_token(settings.token_label, so_pin, user_pin)
    elif settings.softhsm_conf:
        os.environ["SOFTHSM2_CONF"] = str(Path(settings.softhsm_conf).resolve())

    creds = settings.credentials_path
    if not creds.exists():
        write_credentials(creds, {PROFILE: new_identity()}, settings.region)
    if settings.xks_enabled:
        ensure_xks_profile(creds, settings.region)
    return settings


def init_nss_db(nssdb: Path, pin_path: Path) -> None:
    """An NSS database (NSS's softoken, token "NSS Certificate DB") whose password is a new
    user PIN, unless ``nssdb`` holds one: ``certutil -N`` from Debian's libnss3-tools."""
    if (nssdb / "key4.db").exists():
        return
    certutil = shutil.which("certutil")
    if not certutil:
        raise ConfigError("certutil not found: install NSS's tools (Debian: libnss3-tools)")
    nssdb.mkdir(mode=0o700, exist_ok=True)
    if not pin_path.exists():
        _write_private(pin_path, _random_token(24) + "\n")
    done = subprocess.run(
        [certutil, "-N", "-d", f"sql:{nssdb}", "-f", str(pin_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"certutil could not create {nssdb}: {done.stderr.strip()}")
    for made in nssdb.iterdir():
        os.chmod(made, 0o600)


def use_home(settings: Settings) -> Settings:
    """Point SoftHSM2 at an existing home, creating nothing (for ``hsmkms doctor``).

    :func:`ensure_home` would initialise a new, empty token where the token directory is
    empty or gone, and a check must never do that: a token that went away is what it may be
    asked to diagnose."""
    if not settings.home.is_dir():
        raise ConfigError(f"no hsmkms home at {settings.home}: pass --home DIR")
    conf = settings.softhsm_conf_path
    if settings.softhsm_conf:
        os.environ["SOFTHSM2_CONF"] = str(Path(settings.softhsm_conf).resolve())
    elif "softhsm" in settings.pkcs11_module and conf.exists():
        os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
    return settings


def init_softhsm_token(label: str, so_pin: str, user_pin: str) -> None:
    """Initialise a free SoftHSM2 slot as token ``label`` (uses SOFTHSM2_CONF)."""
    result = subprocess.run(
        [
            softhsm_util(),
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            user_pin,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        # softhsm2-util does not echo PINs in its messages.
        raise ConfigError(
            f"softhsm2-util could not initialise token {label!r}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
