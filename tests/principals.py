"""Several principals in two accounts, each with a client of one face of hsmkms.

    p = Principals.for_library(library)           # in-process: KMS.as_caller(Caller(...))
    p, srv = Principals.for_server(home)          # a real server trusting every identity
    p["bob"].generate_data_key_pair(KeyId=arn, KeyPairSpec="ECC_NIST_P256")
    p.arn("bob"), p.account("bob"), p.root("bob")

Account A holds admin, alice and an assumed-role session of role ``app``; account B holds bob
and carol. Both faces see the caller's source IP as 127.0.0.1.
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path
from typing import Any

from hsmkms.home import PROFILE, Identity, new_identity, write_credentials

SOURCE_IP = "127.0.0.1"


def _account() -> str:
    return "9" + "".join(secrets.choice(string.digits) for _ in range(11))


def make_identities() -> dict[str, Identity]:
    a, b = _account(), _account()
    while b == a:
        b = _account()
    app = new_identity(a, "unused")
    return {
        "admin": new_identity(a, "admin"),
        "alice": new_identity(a, "alice"),
        "app": Identity(
            app.access_key_id,
            app.secret_access_key,
            a,
            f"arn:aws:sts::{a}:assumed-role/app/session-1",
        ),
        "bob": new_identity(b, "bob"),
        "carol": new_identity(b, "carol"),
    }


class Principals:
    """Clients by principal name, and who each principal is."""

    def __init__(
        self,
        face: str,
        identities: dict[str, Identity],
        clients: dict[str, Any],
        server: Any = None,
    ) -> None:
        self.face = face
        self.identities = identities
        self.clients = clients
        self.server = server  # the ServerProcess of the http face

    def __getitem__(self, name: str) -> Any:
        return self.clients[name]

    def arn(self, name: str) -> str:
        return self.identities[name].principal_arn

    def account(self, name: str) -> str:
        return self.identities[name].account_id

    def root(self, name: str) -> str:
        return f"arn:aws:iam::{self.account(name)}:root"

    @classmethod
    def for_library(cls, library: Any) -> Principals:
        from hsmkms.kms import Caller

        identities = make_identities()
        clients = {
            name: library.as_caller(
                Caller(i.account_id, i.principal_arn, i.access_key_id, SOURCE_IP)
            )
            for name, i in identities.items()
        }
        return cls("library", identities, clients)

    @classmethod
    def for_server(cls, home: Path) -> tuple[Principals, Any]:
        """A started server whose credentials file holds every identity (admin's profile is
        the default one), and boto3 clients for each."""
        import boto3
        from botocore.config import Config
        from server import ServerProcess

        identities = make_identities()
        srv = ServerProcess(home)
        home.mkdir(parents=True, exist_ok=True)
        profiles = {PROFILE: identities["admin"]}
        profiles.update({n: i for n, i in identities.items() if n != "admin"})
        write_credentials(home / "credentials", profiles, srv.region)
        srv.start()
        clients = {
            name: boto3.client(
                "kms",
                endpoint_url=srv.url,
                region_name=srv.region,
                aws_access_key_id=i.access_key_id,
                aws_secret_access_key=i.secret_access_key,
                config=Config(retries={"total_max_attempts": 1}),
            )
            for name, i in identities.items()
        }
        return cls("http", identities, clients, srv), srv
