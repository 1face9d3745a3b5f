"""The token objects of asymmetric and HMAC KMS keys through their life (issue 14): made by
CreateKey sealed on the token with one usage, surviving a new process and a server restart,
destroyed by the deletion sweep at the end of the waiting period."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from faults import clean_env
from helpers import raises
from server import REPO, ServerProcess

from hsmkms.modes.token_objects import parse_material_label
from hsmkms.service import keys

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def material_of(kms, key_id: str) -> bytes:
    return bytes.fromhex(kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"])


# -- what CreateKey leaves on the token --------------------------------------------------------


@pytest.mark.token_objects  # the wrapped mode's own: tests/features/test_wrapped_mode.py
@pytest.mark.parametrize(
    "spec,usage,use,kind,bits",
    [
        ("RSA_2048", "SIGN_VERIFY", "sign", "RSA", 2048),
        ("RSA_2048", "ENCRYPT_DECRYPT", "decrypt", "RSA", 2048),
        ("ECC_NIST_P256", "SIGN_VERIFY", "sign", "EC", 0),
        ("ECC_NIST_P521", "KEY_AGREEMENT", "derive", "EC", 0),
        ("ECC_SECG_P256K1", "SIGN_VERIFY", "sign", "EC", 0),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "sign", "EDWARDS", 0),
        ("HMAC_224", "GENERATE_VERIFY_MAC", "sign", "HMAC", 224),
        ("HMAC_512", "GENERATE_VERIFY_MAC", "sign", "HMAC", 512),
    ],
)
def test_the_key_object_create_key_makes_cannot_leave_the_token(
    library, token, spec, usage, use, kind, bits
):
    key = library.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    material = material_of(library, key["KeyId"])
    assert key["CurrentKeyMaterialId"] == material.hex()
    check = token.check_master_key(material)
    assert check.kind == kind and check.bits == bits
    # Stored, secret since it was made, never extractable, unchangeable ...
    assert check.token and check.private
    assert check.sensitive and check.always_sensitive
    assert not check.extractable and check.never_extractable
    assert not check.modifiable
    # ... and it did not come out when asked: its secret unreadable, no wrap of it allowed.
    assert not check.value_readable and not check.wrappable
    assert check.sealed
    # Exactly the one usage its KeyUsage needs (an HMAC key: CKA_SIGN and CKA_VERIFY).
    uses = {"sign": check.sign, "decrypt": check.decrypt, "derive": check.derive}
    assert [u for u, allowed in uses.items() if allowed] == [use]
    assert not (check.encrypt or check.wrap or check.unwrap)
    # Its label names the KMS key, as doctor reads it.
    label = parse_material_label(check.label, material)
    assert label is not None and label.key_id == key["KeyId"]


# -- deletion ------------------------------------------------------------------------------------

DELETED = [
    ("ECC_NIST_P256", "SIGN_VERIFY"),
    ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ("ECC_NIST_P384", "KEY_AGREEMENT"),
    ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
    ("RSA_2048", "ENCRYPT_DECRYPT"),
]


def test_the_sweep_destroys_private_and_hmac_key_objects_after_the_waiting_period(
    library, service, token
):
    made: dict[str, tuple[str, bytes]] = {}
    for spec, usage in DELETED:
        key_id = library.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
        material = material_of(library, key_id)
        assert token.has_master_key(material)
        made[key_id] = (usage, material)
    for key_id in made:
        library.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    started = datetime.now(UTC)
    assert not set(made) & set(keys.sweep(service, started + timedelta(days=6)))  # not due yet
    assert all(token.has_master_key(material) for _usage, material in made.values())

    deleted = keys.sweep(service, started + timedelta(days=7, minutes=1))
    assert set(made) <= set(deleted)
    listed = {mid for mid, _label in token.list_master_keys()}
    for key_id, (_usage, material) in made.items():
        assert not token.has_master_key(material), key_id
        assert material not in listed
        assert service.store.materials(key_id) == []
        with raises("NotFoundException"):
            library.describe_key(KeyId=key_id)
    peer = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(*SPKI)
    calls = {
        "SIGN_VERIFY": lambda k: library.sign(KeyId=k, Message=b"m",
                                              SigningAlgorithm="ECDSA_SHA_256"),
        "GENERATE_VERIFY_MAC": lambda k: library.generate_mac(KeyId=k, Message=b"m",
                                                              MacAlgorithm="HMAC_SHA_256"),
        "KEY_AGREEMENT": lambda k: library.derive_shared_secret(
            KeyId=k, KeyAgreementAlgorithm="ECDH", PublicKey=peer),
        "ENCRYPT_DECRYPT": lambda k: library.encrypt(
            KeyId=k, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_1"),
    }  # fmt: skip
    for key_id, (usage, _material) in made.items():
        with raises("NotFoundException"):
            calls[usage](key_id)
        if usage != "GENERATE_VERIFY_MAC":
            with raises("NotFoundException"):
                library.get_public_key(KeyId=key_id)
    assert not set(made) & set(keys.sweep(service, started + timedelta(days=8)))


def test_decrypt_naming_a_deleted_rsa_key_is_not_found(library, service):
    key_id = library.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"][
        "KeyId"
    ]
    blob = library.encrypt(KeyId=key_id, Plaintext=b"bye", EncryptionAlgorithm="RSAES_OAEP_SHA_1")[
        "CiphertextBlob"
    ]
    library.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert key_id in keys.sweep(service, datetime.now(UTC) + timedelta(days=7, minutes=1))
    with raises("NotFoundException"):
        library.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    with raises("NotFoundException"):
        library.re_encrypt(
            CiphertextBlob=blob, SourceKeyId=key_id, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1",
            DestinationKeyId=library.create_key()["KeyMetadata"]["KeyId"],
        )  # fmt: skip


# -- survival ------------------------------------------------------------------------------------

SURVIVORS = {
    "ecdsa": ("ECC_NIST_P256", "SIGN_VERIFY"),
    "ed25519": ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
    "pss": ("RSA_2048", "SIGN_VERIFY"),
    "oaep": ("RSA_2048", "ENCRYPT_DECRYPT"),
    "mac": ("HMAC_256", "GENERATE_VERIFY_MAC"),
    "ecdh": ("ECC_NIST_P256", "KEY_AGREEMENT"),
}
MESSAGE = b"signed after the restart"


class Before:
    """Keys made on one face, with what was learnt of them before the restart: the public
    keys (as a client keeps them), a MAC, an RSA ciphertext and an ECDH peer."""

    def __init__(self, kms) -> None:
        self.ids = {
            name: kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
            for name, (spec, usage) in SURVIVORS.items()
        }
        self.public = {
            name: serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
            for name, key_id in self.ids.items()
            if name != "mac"
        }
        self.mac = kms.generate_mac(KeyId=self.ids["mac"], Message=MESSAGE,
                                    MacAlgorithm="HMAC_SHA_256")["Mac"]  # fmt: skip
        self.ciphertext = kms.encrypt(
            KeyId=self.ids["oaep"], Plaintext=MESSAGE, EncryptionAlgorithm="RSAES_OAEP_SHA_256"
        )["CiphertextBlob"]
        peer = ec.generate_private_key(ec.SECP256R1())
        self.peer_spki = peer.public_key().public_bytes(*SPKI)
        self.secret = peer.exchange(ec.ECDH(), self.public["ecdh"])  # fmt: skip

    def check(self, after: dict[str, bytes]) -> None:
        """What the new process or server answered: signatures that verify under the public
        keys fetched before, the same MAC, the plaintext, the peer's secret."""
        self.public["ecdsa"].verify(after["ecdsa"], MESSAGE, ec.ECDSA(hashes.SHA256()))
        ed = self.public["ed25519"]
        assert isinstance(ed, ed25519.Ed25519PublicKey)
        ed.verify(after["ed25519"], MESSAGE)
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        self.public["pss"].verify(after["pss"], MESSAGE, pss, hashes.SHA256())
        assert after["mac"] == self.mac
        assert after["oaep"] == MESSAGE
        assert after["ecdh"] == self.secret


def use_again(kms, ids: dict[str, str], ciphertext: bytes, peer_spki: bytes) -> dict[str, bytes]:
    """Every private step of every key once more, on ``kms``."""
    return {
        "ecdsa": kms.sign(KeyId=ids["ecdsa"], Message=MESSAGE,
                          SigningAlgorithm="ECDSA_SHA_256")["Signature"],
        "ed25519": kms.sign(KeyId=ids["ed25519"], Message=MESSAGE,
                            SigningAlgorithm="ED25519_SHA_512")["Signature"],
        "pss": kms.sign(KeyId=ids["pss"], Message=MESSAGE,
                        SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"],
        "mac": kms.generate_mac(KeyId=ids["mac"], Message=MESSAGE,
                                MacAlgorithm="HMAC_SHA_256")["Mac"],
        "oaep": kms.decrypt(KeyId=ids["oaep"], CiphertextBlob=ciphertext,
                            EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"],
        "ecdh": kms.derive_shared_secret(KeyId=ids["ecdh"], KeyAgreementAlgorithm="ECDH",
                                         PublicKey=peer_spki)["SharedSecret"],
    }  # fmt: skip


_IN_A_NEW_PROCESS = """
import json, sys
from hsmkms.config import Settings
from hsmkms.kms import KMS
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/features"]  # tests/, for this module
from test_asymmetric_lifecycle import use_again
job = json.load(open(sys.argv[1]))
with KMS(Settings.load(home=sys.argv[2], env={})) as kms:
    out = use_again(kms, job["ids"], bytes.fromhex(job["ciphertext"]), bytes.fromhex(job["peer"]))
print(json.dumps({name: value.hex() for name, value in out.items()}))
"""


@pytest.mark.sqlite_home
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_keys_sign_in_a_new_process_on_the_same_home(library, settings, tmp_path: Path):
    before = Before(library)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"ids": before.ids, "ciphertext": before.ciphertext.hex(),
                               "peer": before.peer_spki.hex()}))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_NEW_PROCESS, str(job), str(settings.home),
         str(Path(__file__).parent.parent)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=clean_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    before.check({name: bytes.fromhex(value) for name, value in after.items()})


@pytest.mark.slow
def test_keys_sign_after_the_server_restarts(tmp_path: Path):
    srv = ServerProcess(tmp_path / "home").start()
    try:
        before = Before(srv.client())
        srv.stop()
        srv.start()  # the same home: token, store, credentials
        kms = srv.client()
        before.check(use_again(kms, before.ids, before.ciphertext, before.peer_spki))
        # and the server itself still verifies what it signed before and after
        for algorithm, name in (("ECDSA_SHA_256", "ecdsa"), ("RSASSA_PSS_SHA_256", "pss")):
            signature = kms.sign(KeyId=before.ids[name], Message=MESSAGE,
                                 SigningAlgorithm=algorithm)["Signature"]  # fmt: skip
            assert kms.verify(KeyId=before.ids[name], Message=MESSAGE, Signature=signature,
                              SigningAlgorithm=algorithm)["SignatureValid"]  # fmt: skip
        assert kms.verify_mac(KeyId=before.ids["mac"], Message=MESSAGE, Mac=before.mac,
                              MacAlgorithm="HMAC_SHA_256")["MacValid"]  # fmt: skip
        assert kms.get_public_key(KeyId=before.ids["ecdsa"])["PublicKey"] == before.public[
            "ecdsa"
        ].public_bytes(*SPKI)
    finally:
        srv.stop()
