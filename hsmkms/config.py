"""One typed settings object, loaded once: defaults < TOML file < ``HSMKMS_*`` variables < flags.

Every setting named here can be given in the TOML file (``--config FILE``, top-level keys named
as the fields below) or as an environment variable ``HSMKMS_<FIELD>`` in upper case.
The PIN is never a setting's value in a file: it comes from ``HSMKMS_PIN`` or from a 0600 file
named by ``pin_file``; the operators' bearer token likewise only from a 0600 file named by
``operator_token_file``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PKCS11_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


# NSS's softoken (Debian libnss3) and the label of its database's token, which NSS fixes.
NSS_MODULE = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
NSS_TOKEN_LABEL = "NSS Certificate DB"

# A guessable operator token would be no lock: 16 characters of a random text at the least.
MIN_OPERATOR_TOKEN = 16


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


def default_pkcs11_module() -> str:
    for candidate in DEFAULT_PKCS11_MODULES:
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_PKCS11_MODULES[0]


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path(os.environ.get("HSMKMS_HOME", "var")))
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    # The Region of the library face and of printed examples; requests over HTTP are in the
    # Region of their SigV4 scope.
    region: str = "us-east-1"
    # The Regions whose SigV4 scopes the server accepts: "*" (every Region botocore knows for
    # KMS, and `region`), or a comma-separated list (a TOML list too).
    regions: str = "*"
    # The token.
    pkcs11_module: str = field(default_factory=default_pkcs11_module)
    token_label: str = "hsmkms"
    pin_file: str | None = None  # default: <home>/user.pin
    softhsm_conf: str | None = None  # default: <home>/softhsm2.conf when the home is embedded
    # The software token of an embedded home: "softhsm2", or "nss" (NSS's softoken: a database
    # under <home>/nssdb; pkcs11_module and token_label then default to NSS's). The module's
    # own C_Initialize parameters (pReserved; for "nss" configdir='sql:<home>/nssdb'), and
    # mechanisms hsmkms must not use though the token offers them (docs/hsm-vendors.md).
    hsm: str = "softhsm2"
    pkcs11_init_args: str | None = None
    token_mechanisms_off: str = ""
    # The most key materials hsmkms keeps on the home's token (0: no cap): a token with a small
    # object store (a YubiHSM 2 holds 256 objects in all) then answers LimitExceededException
    # before the device refuses (docs/hsm-vendors.md).
    token_max_objects: int = 0
    # Where key materials live (README, "Choosing a master-key mode"): "token" (each one a token
    # object) or "wrapped" (each one wrapped in the store under a token-resident domain key,
    # unwrapped into a session object on use: for more keys than the token holds), and how
    # many unwrapped keys a process keeps (SoftHSM2: ~12 KB each; the least recently used
    # are destroyed).
    master_keys: str = "token"
    loaded_keys: int = 20_000
    # Seconds a token call may take before DependencyTimeoutException (0: no deadline), and
    # the same for slow work: key pair generation on the token (RSA-4096: seconds), listings.
    token_call_timeout: float = 5.0
    token_slow_call_timeout: float = 60.0
    # The store: a SQLite path (default <home>/hsmkms.sqlite3) or a postgresql:// URL.
    store: str | None = None
    # Seconds a store write waits for another writer's lock before answering
    # DependencyTimeoutException.
    store_busy_timeout: float = 10.0
    # Identities: an AWS shared-credentials INI file (default <home>/credentials).
    credentials_file: str | None = None
    # Data key pairs: "host" (cryptography/OpenSSL) or "token" (generated on the HSM).
    keypair_source: str = "host"
    # Pre-generated RSA pairs kept per spec and process (0 disables the pool), and the
    # background threads per process that refill it (at a lower CPU priority than requests).
    rsa_pool_size: int = 0
    rsa_pool_threads: int = 1
    # Seconds a process may answer from its cache of key records, aliases, materials and
    # grants after another process changed them (AWS KMS is eventually consistent too);
    # changes made through the process itself are seen at once. 0 turns the cache off.
    cache_ttl: float = 1.0
    # Quick operations (AES-GCM on the token over cached metadata) run on the server's event
    # loop rather than hopping to a worker thread; slow ones, and all while the token is in
    # trouble, still go to threads.
    api_inline: bool = True
    # Largest request body accepted, in bytes.
    max_body_bytes: int = 1024 * 1024
    # Seconds between rounds of the server's scheduler: due automatic rotations, then deletion
    # sweeps, done by one process at a time of all that share the store (a lease in the store).
    scheduler_interval: float = 60.0
    # Seconds in one day of the automatic rotation schedule (RotationPeriodInDays,
    # NextRotationDate). 86400 in production; tests and demos shorten it (0.01 makes a
    # 90-day period 0.9 s). Deletion waiting periods are not affected.
    rotation_day_seconds: float = 86400.0
    log_level: str = "info"
    # HTTP limits of `hsmkms serve` (hsmkms/api/protocol.py): requests in progress per
    # process beyond which ThrottlingException is answered; seconds a request's head, then its
    # body, may take to arrive; seconds an idle keep-alive connection stays open.
    limit_concurrency: int = 128
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    # Operators: a file (mode 0600) holding the bearer token that GET /health's full report
    # and GET /metrics require. Unset: they are not served; /health says {"ok": ...} only.
    operator_token_file: str | None = None
    # Seeded keys (hsmkms/seed/, docs/seeding.md): a YAML or TOML file of keys with fixed
    # KeyIds, applied by `hsmkms serve` once at start-up, before any request is served.
    seed: str | None = None
    # AWS KMS's request quotas (docs/quotas.md): "" (off), "aws" (AWS's default quotas), or
    # rates per second by bucket name, from AWS's figures or none ("aws,CreateKey=1", a
    # [quotas] table, or JSON). Token buckets per (account, Region), shared by every process
    # on the home (<home>/quotas.bin); over quota: ThrottlingException.
    quotas: str = ""
    # Recipient (attested enclaves, docs/attestation.md): a PEM file of the attestation roots
    # trusted (default: the AWS Nitro Enclaves root G1, built in), and how old (seconds) an
    # attestation document may be.
    attestation_trust_anchors: str | None = None
    attestation_max_age: float = 300.0
    # Custom key stores (docs/custom-key-stores.md): the tokens an AWS_CLOUDHSM store may name,
    # "cluster-id=token label[@/path/module.so]" comma-separated (the module defaults to
    # pkcs11_module); an external key store's proxy calls: seconds each may take (AWS's 250 ms)
    # and a PEM file of the CAs its TLS certificate may chain to (default: the system's).
    cloudhsm_clusters: str = ""
    xks_proxy_timeout: float = 0.25
    # The port XKS proxies are reached on: AWS's is 443, and its XksProxyUriEndpoint takes no
    # port (https://<host>); a proxy on another port (a lab, a test) needs this setting.
    xks_proxy_port: int = 443
    xks_proxy_ca_file: str | None = None
    # hsmkms as an XKS proxy (docs/xks.md): the XKS proxy API v1 under xks_path_prefix
    # (https://HOST<prefix>/kms/xks/v1/...; "" for none) for the [xks] credentials of the
    # credentials file, which the home gains on start-up. false: neither.
    xks_enabled: bool = True
    xks_path_prefix: str = "/xks"
    # The audit trail (docs/audit.md): one CloudTrail-shaped JSON event per request, each
    # line hash-chained to the one before. audit_file: a JSON-lines file (relative: under the
    # home) shared by every process, renamed <file>.<seq> past audit_max_bytes (0: never);
    # audit_stdout: the same lines on stdout; audit_key_file: a 0600 file holding the chain's
    # HMAC key (made if missing; unset: plain SHA-256); audit_required: refuse requests with
    # KMSInternalException when no audit device can write; audit_fsync: seconds between
    # fsyncs of the file (0: after every event).
    audit_file: str | None = None
    audit_stdout: bool = False
    audit_max_bytes: int = 100 * 1024 * 1024
    audit_key_file: str | None = None
    audit_required: bool = False
    audit_fsync: float = 1.0

    # -- derived paths -------------------------------------------------------------------
    @property
    def store_path(self) -> str:
        return self.store or str(self.home / "hsmkms.sqlite3")

    @property
    def credentials_path(self) -> Path:
        return Path(self.credentials_file) if self.credentials_file else self.home / "credentials"

    @property
    def pin_path(self) -> Path:
        return Path(self.pin_file) if self.pin_file else self.home / "user.pin"

    @property
    def softhsm_conf_path(self) -> Path:
        return Path(self.softhsm_conf) if self.softhsm_conf else self.home / "softhsm2.conf"

    @property
    def audit_path(self) -> Path | None:
        return self._under_home(self.audit_file)

    @property
    def audit_key_path(self) -> Path | None:
        return self._under_home(self.audit_key_file)

    @property
    def pkcs11_init_string(self) -> str | None:
        """CK_C_INITIALIZE_ARGS.pReserved for the module (NSS's softoken needs its database)."""
        if self.pkcs11_init_args is None and self.hsm == "nss":
            nssdb = (self.home / "nssdb").resolve()
            return f"configdir='sql:{nssdb}' certPrefix='' keyPrefix='' secmod='secmod.db'"
        return self.pkcs11_init_args

    def _under_home(self, name: str | None) -> Path | None:
        return None if not name else self.home / name  # an absolute name stays itself

    def read_pin(self) -> str:
        """The user PIN: ``HSMKMS_PIN`` if set, else the PIN file, which must be mode 0600."""
        pin = os.environ.get("HSMKMS_PIN")
        if pin:
            return pin
        path = self.pin_path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ConfigError(
                f"no token PIN: set HSMKMS_PIN or write the PIN to {path} (mode 0600)"
            ) from None
        _check_private(st, path, "PIN file")
        return path.read_text().strip()

    def read_operator_token(self) -> str | None:
        """The operators' bearer token from ``operator_token_file`` (mode 0600, one line of
        at least 16 visible ASCII characters, as RFC 6750's b64token allows); None if unset."""
        if not self.operator_token_file:
            return None
        path = Path(self.operator_token_file)
        try:
            st = path.stat()
            _check_private(st, path, "operator token file")
            token = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the operator token file {path}: {exc.strerror}"
            ) from None
        if not token:
            raise ConfigError(f"the operator token file {path} is empty")
        if not all("!" <= c <= "~" for c in token):
            raise ConfigError(
                f"the operator token in {path} must be one line of visible ASCII, no spaces"
            )
        if len(token) < MIN_OPERATOR_TOKEN:
            raise ConfigError(
                f"the operator token in {path} is shorter than {MIN_OPERATOR_TOKEN} "
                "characters: write a long random one (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe())')"
            )
        return token

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        config_file = config_file or env.get("HSMKMS_CONFIG")
        if config_file:
            try:
                with open(config_file, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        for f in fields(cls):
            name = f"HSMKMS_{f.name.upper()}"
            if name in env and f.name != "pin":
                values[f.name] = env[name]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)} - {"pin"}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.pop("pin", None)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            kwargs[f.name] = _coerce(f, values[f.name])
        if isinstance(kwargs.get("regions"), list | tuple):
            kwargs["regions"] = ",".join(str(r) for r in kwargs["regions"])
        if kwargs.get("hsm") == "nss":  # NSS's module and token, unless named
            kwargs.setdefault("pkcs11_module", NSS_MODULE)
            kwargs.setdefault("token_label", NSS_TOKEN_LABEL)
        settings = cls(**kwargs)
        if settings.hsm not in ("softhsm2", "nss"):
            raise ConfigError('hsm must be "softhsm2" or "nss"')
        if min(settings.token_call_timeout, settings.token_slow_call_timeout) < 0:
            raise ConfigError("token_call_timeout and token_slow_call_timeout must be >= 0")
        listed = set() if settings.regions.strip() == "*" else settings._listed_regions()
        if not all(_REGION.match(r) for r in listed | {settings.region}):
            raise ConfigError(f"regions: {settings.regions!r} is not a list of Region names")
        if settings.keypair_source not in ("host", "token"):
            raise ConfigError('keypair_source must be "host" or "token"')
        if settings.master_keys not in ("token", "wrapped"):
            raise ConfigError('master_keys must be "token" or "wrapped"')
        if settings.loaded_keys < 1:
            raise ConfigError("loaded_keys must be >= 1")
        if settings.cache_ttl < 0 or settings.rsa_pool_size < 0 or settings.rsa_pool_threads < 1:
            raise ConfigError("cache_ttl and rsa_pool_size must be >= 0, rsa_pool_threads >= 1")
        if (
            settings.limit_concurrency < 1
            or min(settings.header_timeout, settings.body_timeout, settings.keep_alive_timeout) <= 0
        ):
            raise ConfigError(
                "limit_concurrency must be >= 1, and header_timeout, body_timeout and "
                "keep_alive_timeout positive"
            )
        if settings.scheduler_interval <= 0 or settings.rotation_day_seconds <= 0:
            raise ConfigError("scheduler_interval and rotation_day_seconds must be positive")
        if settings.audit_max_bytes < 0 or settings.audit_fsync < 0:
            raise ConfigError("audit_max_bytes and audit_fsync must be >= 0")
        if not _XKS_PREFIX.match(settings.xks_path_prefix) or len(settings.xks_path_prefix) > 117:
            raise ConfigError(
                "xks_path_prefix must be empty or /segments of A-Z, a-z, 0-9, - and _ (no "
                "trailing /), at most 117 characters: AWS KMS's XksProxyUriPath is the prefix "
                "and /kms/xks/v1, at most 128"
            )
        settings.quotas = parse_quotas(settings.quotas).text()  # one form, for the workers too
        return settings

    def quota_setting(self) -> QuotaSetting:
        """The ``quotas`` setting, parsed (ConfigError if it is wrong)."""
        return parse_quotas(self.quotas)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def region_set(self) -> frozenset[str]:
        """The Regions served (``regions``), ``region`` always among them."""
        if self.regions.strip() == "*":
            return _known_regions() | {self.region}
        return self._listed_regions() | {self.region}

    def _listed_regions(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.regions.split(",") if r.strip())


# -- quotas -----------------------------------------------------------------------------------
# The names a `quotas` setting gives rates to, besides every KMS operation's (its own quota):
# the profiles, the shared quotas of cryptographic operations by key type, and
# GenerateDataKeyPair's per-spec quota (hsmkms/service/quota_table.py holds AWS's figures).
QUOTA_PROFILES = ("aws",)
SHARED_QUOTAS = ("symmetric", "rsa", "ecc", "ml-dsa", "ml-kem")
PAIR_QUOTA = "GenerateDataKeyPair:"
_QUOTAS_OFF = ("", "off", "none", "false")


@dataclass(frozen=True)
class QuotaSetting:
    """``profile``: "aws" (AWS's figures for every bucket ``rates`` does not name) or "" (the
    buckets of ``rates`` alone); ``rates``: requests per second by bucket name."""

    profile: str = ""
    rates: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.profile or self.rates)

    def text(self) -> str:
        """The setting as ``HSMKMS_QUOTAS`` and ``--quotas`` take it ("" when off)."""
        items = [self.profile] if self.profile else []
        items += [f"{name}={_number(rate)}" for name, rate in self.rates.items()]
        return ",".join(items)


def parse_quotas(value: Any) -> QuotaSetting:
    """A ``quotas`` value: off ("", "off", false), a profile ("aws"), a table (TOML, or a JSON
    object) or a text "aws,Name=rate,Name=rate" of rates; ConfigError naming what is wrong."""
    if value is None or value is False:
        return QuotaSetting()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _QUOTAS_OFF:
            return QuotaSetting()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"quotas: {text!r} is not a JSON object: {exc}") from None
        else:
            value = dict(_quota_item(item) for item in text.split(",") if item.strip())
    if not isinstance(value, dict):
        raise ConfigError(
            'quotas must be "aws", a table of rates per second, or "Name=rate,Name=rate"'
        )
    profile = ""
    rates: dict[str, float] = {}
    for name, rate in value.items():
        if str(name).strip().lower() == "profile":
            profile = str(rate).strip().lower()
            if profile in _QUOTAS_OFF:
                profile = ""
            elif profile not in QUOTA_PROFILES:
                raise ConfigError(f'quotas: unknown profile {rate!r}: the profile is "aws"')
            continue
        rates[_quota_name(str(name))] = _quota_rate(str(name), rate)
    return QuotaSetting(profile, rates)


def _quota_item(item: str) -> tuple[str, Any]:
    name, equals, rate = item.partition("=")
    if not equals:
        return "profile", name  # "aws"
    return name.strip(), rate.strip()


def _quota_name(name: str) -> str:
    """The bucket's name as hsmkms spells it, or ConfigError."""
    from hsmkms import model
    from hsmkms.specs import DataKeyPairSpec

    name = name.strip()
    if name.lower() in SHARED_QUOTAS:
        return name.lower()
    if name.startswith(PAIR_QUOTA):
        spec = name[len(PAIR_QUOTA) :].strip().upper()
        if spec in DataKeyPairSpec.__members__:
            return PAIR_QUOTA + spec
        raise ConfigError(
            f"quotas: {name!r} names no KeyPairSpec: one of {', '.join(DataKeyPairSpec)}"
        )
    if name in model.operations():
        return name
    raise ConfigError(
        f"quotas: unknown quota {name!r}: name a KMS operation (CreateKey), a shared quota "
        f"of cryptographic operations ({', '.join(SHARED_QUOTAS)}), or "
        f'{PAIR_QUOTA}<KeyPairSpec> ("{PAIR_QUOTA}RSA_2048")'
    )


def _quota_rate(name: str, rate: Any) -> float:
    try:
        if isinstance(rate, bool):
            raise ValueError(rate)
        number = float(rate)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number < math.inf:
        raise ConfigError(
            f"quotas: the rate of {name.strip()} must be a positive number of requests per "
            f"second, not {rate!r}"
        )
    return number


def _number(rate: float) -> str:
    return str(int(rate)) if rate.is_integer() else repr(rate)


@functools.cache
def _known_regions() -> frozenset[str]:
    """The Regions botocore's endpoint data knows for KMS (read once: ~0.1 s)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_available_regions("kms"))


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_XKS_PREFIX = re.compile(r"^(/[A-Za-z0-9_-]+)*$")


def _check_private(st: os.stat_result, path: Path, what: str) -> None:
    """A secret's file must be readable by its owner alone (mode 0600 or stricter)."""
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"the {what} {path} is readable by others: run chmod 600 {path}")


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    kind = str(f.type)
    try:
        if "Path" in kind:
            return Path(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind == "bool":
            return _boolean(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {f.name}: {value!r} is not a {kind}") from None
    return value


def _boolean(value: Any) -> bool:
    """A TOML boolean, or the words an environment variable uses for one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
