"""Asymmetric, HMAC and post-quantum keys created through one server worker are usable at
once through every other (issues 14, 15): the other worker's token finds the new private key
(an RSA key is made on a side session and found by a search of the token, on a thread) and its
store cache reads the new public key or sealed seed."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from server import ServerProcess

KEYS = [
    ("RSA_2048", "SIGN_VERIFY", "RSASSA_PSS_SHA_256"),
    ("ECC_NIST_P256", "SIGN_VERIFY", "ECDSA_SHA_256"),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", "ECDSA_SHA_256"),
    ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "ED25519_SHA_512"),
    ("ML_DSA_44", "SIGN_VERIFY", "ML_DSA_SHAKE_256"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256"),
    ("ECC_NIST_P256", "KEY_AGREEMENT", "ECDH"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "RSAES_OAEP_SHA_256"),
    ("ML_KEM_768", "ENCAPSULATE_DECAPSULATE", "ML_KEM"),
]


# Two worker processes serve each test here: seconds, kept out of the fast subset.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("hsmkms-two-workers-asym"), workers=2) as srv:
        yield srv


def use(client: Any, key_id: str, usage: str, algorithm: str) -> None:
    if usage == "SIGN_VERIFY":
        signature = client.sign(KeyId=key_id, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
        assert client.verify(
            KeyId=key_id, Message=b"m", Signature=signature, SigningAlgorithm=algorithm
        )["SignatureValid"]
    elif usage == "GENERATE_VERIFY_MAC":
        mac = client.generate_mac(KeyId=key_id, Message=b"m", MacAlgorithm=algorithm)["Mac"]
        assert client.verify_mac(KeyId=key_id, Message=b"m", Mac=mac, MacAlgorithm=algorithm)[
            "MacValid"
        ]
    elif usage == "KEY_AGREEMENT":
        peer = ec.generate_private_key(ec.SECP256R1())
        spki = peer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public = serialization.load_der_public_key(client.get_public_key(KeyId=key_id)["PublicKey"])
        out = client.derive_shared_secret(
            KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=spki
        )
        assert out["SharedSecret"] == peer.exchange(ec.ECDH(), public)
    elif usage == "ENCRYPT_DECRYPT":
        message = os.urandom(32)
        blob = client.encrypt(KeyId=key_id, Plaintext=message, EncryptionAlgorithm=algorithm)
        assert (
            client.decrypt(
                KeyId=key_id, CiphertextBlob=blob["CiphertextBlob"], EncryptionAlgorithm=algorithm
            )["Plaintext"]
            == message
        )
    else:
        enc = client.encapsulate(KeyId=key_id, EncapsulationAlgorithm=algorithm)
        assert client.decapsulate(
            KeyId=key_id, SharedSecretCiphertextBlob=enc["SharedSecretCiphertextBlob"],
            EncapsulationAlgorithm=algorithm,
        )["SharedSecret"] == enc["SharedSecret"]  # fmt: skip


def test_new_keys_of_every_kind_work_through_every_connection(two_workers):
    srv = two_workers
    clients = [srv.client() for _ in range(6)]
    with ThreadPoolExecutor(len(clients)) as pool:
        made = list(
            pool.map(
                lambda job: (
                    job[1].create_key(KeySpec=job[0][0], KeyUsage=job[0][1])["KeyMetadata"][
                        "KeyId"
                    ],
                    job[0],
                ),
                [(k, clients[i % len(clients)]) for i, k in enumerate(KEYS)],
            )
        )

        def use_all(client: Any) -> int:
            for key_id, (_spec, usage, algorithm) in random.sample(made, len(made)):
                use(client, key_id, usage, algorithm)
            return len(made)

        assert sum(pool.map(use_all, clients)) == len(made) * len(clients)


@pytest.mark.slow
def test_imported_material_works_across_workers(two_workers):
    """A wrapping key made by one worker unwraps in another, and the material imported there
    is used through every connection (issue 16)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    srv = two_workers
    pad = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    for _ in range(4):
        material = os.urandom(32)
        key_id = srv.client().create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
        parameters = srv.client().get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        )
        public = serialization.load_der_public_key(parameters["PublicKey"])
        srv.client().import_key_material(
            KeyId=key_id,
            ImportToken=parameters["ImportToken"],
            EncryptedKeyMaterial=public.encrypt(material, pad),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        blob = srv.client().encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
        for _ in range(4):
            assert srv.client().decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
