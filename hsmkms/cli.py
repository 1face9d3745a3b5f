"""``hsmkms`` command line.

    hsmkms serve [--host 127.0.0.1] [--port 8080] [--home DIR] [--config FILE]
                 [--pkcs11-module PATH] [--token-label L] [--workers N]
                 [--tls-cert F --tls-key F] [--log-level LEVEL] [--access-log]
                 [--limit-concurrency N] [--header-timeout S] [--body-timeout S]
                 [--keep-alive-timeout S] [--operator-token-file FILE] [--seed FILE]
                 [--quotas aws|Name=rate,...] [--master-keys token|wrapped]
                 [--audit-file FILE] [--audit-stdout] [--audit-required] ...
    hsmkms doctor [--home DIR] [--config FILE] [--fix [--min-age SECONDS]] [--deep] [--json]
    hsmkms audit verify [FILE|DIR ...] [--key-file FILE] [--partial]   (hsmkms/audit/command.py)
    hsmkms migrate --master-keys token|wrapped [--home DIR] [--batch N] (hsmkms/cli_masterkeys.py)
    hsmkms domain-key rotate [--background] | status [--json]
    hsmkms store copy --from LOCATION --to LOCATION                   (hsmkms/cli_store.py)

``serve`` loads the settings (defaults < TOML file < ``HSMKMS_*`` < flags), creates the embedded
home if needed, opens the token once in this process so that a wrong PIN or a missing token or
module fails now with a message saying how to fix it, applies the seed file if one is given
(:mod:`hsmkms.seed`: once, in this process, before any worker starts), then serves. Workers
are separate processes (one token session each) that read their settings from the
``HSMKMS_*`` variables exported here.

``doctor`` cross-checks the store and the token (:mod:`hsmkms.service.doctor`), beside a running
server or not. Exit status: 0 consistent (orphans, which are harmless, may be listed), 1 drift
(key material the store records is missing from the token, or a master key is extractable),
2 usage, 3 the check could not run (token or store unreachable).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hsmkms import __version__
from hsmkms.audit import command as audit_command
from hsmkms.config import ConfigError, Settings

if TYPE_CHECKING:
    from hsmkms.seed import Seed

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_DRIFT = 1  # doctor's (hsmkms/cli_doctor.py)
EXIT_UNCHECKED = 3


class StartupError(Exception):
    """The server cannot start; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsmkms",
        description="An AWS KMS-compatible service whose master keys live in a PKCS#11 HSM.",
    )
    parser.add_argument("--version", action="version", version=f"hsmkms {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the AWS KMS API over HTTP(S)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument(
        "--home",
        help="state directory: token, store, credentials (default $HSMKMS_HOME or ./var)",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML settings file")
    serve.add_argument(
        "--store",
        metavar="LOCATION",
        help="the metadata store: a SQLite file (default <home>/hsmkms.sqlite3) or a "
        "postgresql:// URL shared by several nodes (docs/deployment.md)",
    )
    serve.add_argument("--pkcs11-module", metavar="PATH", help="PKCS#11 library to load")
    serve.add_argument("--token-label", metavar="LABEL", help="label of the token to use")
    serve.add_argument(
        "--hsm", choices=("softhsm2", "nss"), help="software token of an embedded home"
    )
    serve.add_argument(
        "--master-keys",
        choices=("token", "wrapped"),
        help="where key materials live: each a token object (token, the default), or wrapped "
        "in the store under a token-resident domain key (wrapped: for millions of keys)",
    )
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (default info)",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every HTTP request (off: it costs time)"
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        metavar="N",
        help="requests in progress per process beyond which ThrottlingException is answered "
        "(default 128)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        metavar="S",
        help="seconds a request's head may take to arrive before the connection is closed "
        "(default 10; slow clients)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        metavar="S",
        help="seconds a request's body may take to arrive after its head (default 30)",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=float,
        metavar="S",
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    serve.add_argument(
        "--operator-token-file",
        metavar="FILE",
        help="0600 file holding the bearer token that GET /health's full report and GET "
        "/metrics require (unset: /health says only ok or not, /metrics is not served)",
    )
    serve.add_argument(
        "--seed",
        metavar="FILE",
        help="YAML or TOML file of keys with fixed KeyIds (and material) to make exist before "
        "serving, idempotently (docs/seeding.md)",
    )
    serve.add_argument(
        "--quotas",
        metavar="SPEC",
        help='AWS KMS request quotas: "aws" (AWS\'s defaults), "aws,CreateKey=1" (with '
        'changes), "CreateAlias=3,symmetric=20" (those alone), or "off" (the default); '
        "over quota: ThrottlingException (docs/quotas.md)",
    )
    audit_command.add_serve_arguments(serve)
    serve.set_defaults(handler=cmd_serve)

    from hsmkms import cli_doctor, cli_masterkeys

    cli_doctor.register(commands)
    cli_masterkeys.register(commands)
    from hsmkms import cli_store

    cli_store.register(commands)
    audit_command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except ConfigError as exc:
        print(f"hsmkms: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        print(f"hsmkms: {exc}", file=sys.stderr)
        return EXIT_FAILURE


# -- serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from hsmkms import compose
    from hsmkms.home import ensure_home

    settings = Settings.load(
        args.config,
        home=args.home,
        store=args.store,
        host=args.host,
        port=args.port,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        pkcs11_module=args.pkcs11_module,
        token_label=args.token_label,
        hsm=args.hsm,
        log_level=args.log_level,
        limit_concurrency=args.limit_concurrency,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        operator_token_file=args.operator_token_file,
        seed=args.seed,
        quotas=args.quotas,
        master_keys=args.master_keys,
        **audit_command.serve_overrides(args),
    )
    settings.read_operator_token()  # a bad token file stops the start here, with its reason
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if settings.workers < 1:
        raise ConfigError("--workers must be at least 1")
    for path in (settings.tls_cert, settings.tls_key):
        if path and not os.path.isfile(path):
            raise ConfigError(f"TLS file {path} not found")
    if not os.path.exists(settings.pkcs11_module):
        raise StartupError(
            f"PKCS#11 module {settings.pkcs11_module} not found: install SoftHSM2 "
            "(Debian/Ubuntu: apt-get install softhsm2) or pass --pkcs11-module PATH "
            "to your HSM vendor's library"
        )
    seed_file = load_seed(settings.seed)  # the whole file checked before anything is made
    settings = ensure_home(settings)
    identities = compose.identities(settings)
    # Several workers each open the token themselves: here it is only checked, so the key
    # handles are not looked up (1-2 s at 10,000 keys, before the workers even start).
    kms = open_kms(settings, preload_keys=settings.workers == 1)
    if seed_file is not None:
        # Here, once, before the socket is bound and any worker starts.
        apply_seed(kms, seed_file, next(iter(identities.values())).account_id)
    export_settings(settings)  # before the workers start: they read HSMKMS_*

    import uvicorn

    from hsmkms.api import create_app
    from hsmkms.api.protocol import Limits, guarded

    app: Any
    if settings.workers == 1:
        # One process: serve the KMS opened above rather than logging in twice.
        app = create_app(kms, identities, settings, owns_kms=True)
    else:
        kms.close()  # each worker opens its own session
        app = "hsmkms.api:app_from_env"
    config = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_config=log_config(settings.log_level),
        log_level=settings.log_level,
        access_log=bool(args.access_log),
        server_header=False,
        lifespan="on",
        # uvicorn's httptools protocol with deadlines and limits it lacks (slow clients). The
        # factory is called as the class would be (uvicorn's annotation names classes only).
        http=guarded(  # type: ignore[arg-type]
            Limits(
                header_timeout=settings.header_timeout,
                body_timeout=settings.body_timeout,
                limit_concurrency=settings.limit_concurrency,
            )
        ),
        ws="none",  # no WebSocket upgrades: nothing here speaks them
        # No X-Forwarded-For rewriting: the client address is the peer's (policies read it as
        # aws:SourceIp, and uvicorn would trust the header from any local process), and one
        # middleware layer less per request.
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
    )
    if settings.workers > 1:
        from hsmkms.api import workers

        if workers.reuse_port_supported():
            # A socket per worker, so that the kernel spreads connections (api/workers.py).
            socks = workers.bind_sockets(settings.host, settings.port, settings.workers)
            print_banner(settings)
            workers.PerWorkerSockets(config, socks).run()
        else:
            from uvicorn.supervisors import Multiprocess

            sock = config.bind_socket()
            print_banner(settings)
            Multiprocess(config, sockets=[sock]).run()
    else:
        sock = config.bind_socket()  # exits with uvicorn's message if the port is taken
        print_banner(settings)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        if not server.started:
            return EXIT_FAILURE
    return 0


def open_kms(settings: Settings, preload_keys: bool = True) -> Any:
    """Open the KMS (token login, store) here, turning each failure into advice."""
    from hsmkms import compose, hsm
    from hsmkms.kms import KMS

    label, module = settings.token_label, settings.pkcs11_module
    try:
        return KMS.from_service(compose.open_service(settings, preload_keys=preload_keys))
    except ConfigError:
        raise
    except hsm.LoginFailed:
        pin_file = f"the PIN file {settings.pin_path}"
        source = "HSMKMS_PIN" if os.environ.get("HSMKMS_PIN") else pin_file
        raise StartupError(
            f"token '{label}' refused the user PIN from {source}: put the right PIN there. "
            "Not retried: HSMs lock a token after a few wrong PINs."
        ) from None
    except hsm.TokenUnavailable as exc:
        raise StartupError(
            f"cannot reach token '{label}' through {module}: {exc}. Check --token-label "
            "and --pkcs11-module (list the tokens: softhsm2-util --show-slots, or "
            f"pkcs11-tool --module {module} --list-token-slots)"
        ) from None
    except hsm.TokenError as exc:
        raise StartupError(f"token '{label}' ({module}): {exc}") from None
    except Exception as exc:
        raise StartupError(f"cannot open the KMS: {type(exc).__name__}: {exc}") from None


def load_seed(path: str | None) -> Seed | None:
    """The checked seed file at ``path`` (None: no seed), or StartupError naming the entry."""
    if not path:
        return None
    from hsmkms import seed

    try:
        return seed.load(path)
    except seed.SeedError as exc:
        raise StartupError(str(exc)) from None


def apply_seed(kms: Any, seed_file: Seed, default_account: str) -> None:
    """Apply the seed file through ``kms``'s operation layer; on failure close it and raise
    StartupError naming the entry (nothing of the run is left: hsmkms/seed/)."""
    from hsmkms import seed
    from hsmkms.service.quotas import unmetered

    try:
        with unmetered():  # the operator's start-up work: no client's quota pays for it
            outcome = seed.apply(kms.service, seed_file, default_account)
    except seed.SeedError as exc:
        kms.close()
        raise StartupError(str(exc)) from None
    print(f"hsmkms: {outcome.summary()}", flush=True)


def export_settings(settings: Settings) -> None:
    """Every setting as ``HSMKMS_<FIELD>`` in this process's environment, for the workers."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is not None:
            os.environ[f"HSMKMS_{f.name.upper()}"] = str(value)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus our ``hsmkms`` loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["hsmkms"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def endpoint(settings: Settings) -> str:
    scheme = "https" if settings.tls_cert else "http"
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # what a client on this machine dials
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.port}"


def _store_display(store: str) -> str:
    """The store location without any password a URL may carry."""
    if "://" not in store:
        return store
    parts = urlsplit(store)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def print_banner(settings: Settings) -> None:
    url = endpoint(settings)
    creds = settings.credentials_path.resolve()
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    softhsm = os.environ.get("SOFTHSM2_CONF")
    token = f"'{settings.token_label}' via {settings.pkcs11_module}"
    if softhsm:
        token += f" (SOFTHSM2_CONF={softhsm})"
    lines = [
        f"hsmkms listening on {url} ({workers}, region {settings.region})",
        f"  credentials  {creds} (profile hsmkms)",
        f"  store        {_store_display(settings.store_path)}",
        f"  token        {token}",
        *([f"  quotas       {settings.quotas} (docs/quotas.md)"] if settings.quotas else []),
        *([f"  audit        {settings.audit_path}"] if settings.audit_path else []),
        "  try:",
        f"    AWS_SHARED_CREDENTIALS_FILE={creds} AWS_PROFILE=hsmkms "
        f"aws kms list-keys --endpoint-url {url}",
    ]
    print("\n".join(lines), flush=True)
