"""NSS's softoken (Debian libnss3) as a second PKCS#11 implementation, beside SoftHSM2 in the
same process: a home made with ``hsm = "nss"`` (certutil -N, its password the user PIN, the
database named in C_Initialize's pReserved), the token layer on it, the data key operations
through the library face, and boto3 against ``hsmkms serve --hsm nss``.

What start-up discovers on NSS 3.87 (and what hsmkms then does), checked here: CKM_AES_GCM is
offered but C_Encrypt answers CKR_BUFFER_TOO_SMALL, so GCM runs on the token's AES-ECB
(gcm_ecb.py); it wraps with CKM_AES_KEY_WRAP_PAD; RSA pairs wrap and unwrap on the token.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hsmkms.config import NSS_MODULE, NSS_TOKEN_LABEL, Settings
from hsmkms.hsm import IntegrityError, open_token
from hsmkms.specs import DataKeyPairSpec

pytestmark = pytest.mark.skipif(
    not (os.path.exists(NSS_MODULE) and shutil.which("certutil")),
    reason="needs Debian's libnss3 and libnss3-tools",
)


@pytest.fixture(scope="module")
def nss_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from hsmkms.home import ensure_home

    settings = Settings.load(home=tmp_path_factory.mktemp("nss-home"), env={}, hsm="nss")
    ensure_home(settings)
    return settings


@pytest.fixture(scope="module")
def nss(nss_settings: Settings):
    s = nss_settings
    tok = open_token(s.pkcs11_module, s.token_label, s.read_pin(), init_args=s.pkcs11_init_string)
    yield tok
    tok.close()


def test_an_nss_home_is_an_nss_database_named_in_c_initialize(nss_settings: Settings):
    s = nss_settings
    assert (s.pkcs11_module, s.token_label) == (NSS_MODULE, NSS_TOKEN_LABEL)
    assert (s.home / "nssdb" / "key4.db").exists()
    assert s.pkcs11_init_string == (
        f"configdir='sql:{(s.home / 'nssdb').resolve()}' certPrefix='' keyPrefix='' "
        "secmod='secmod.db'"
    )
    assert not (s.home / "tokens").exists()


def test_what_start_up_discovers_on_nss(nss):
    assert nss.os_locking
    assert nss.wrap_mechanism == "AES_KEY_WRAP_PAD"
    assert nss._capabilities.gcm == "ECB"
    assert {DataKeyPairSpec.RSA_2048, DataKeyPairSpec.ECC_NIST_P256} <= nss.keypair_specs
    assert nss.status().manufacturer == "Mozilla Foundation"


def test_master_keys_on_nss_seal_open_and_refuse_a_flipped_bit(nss):
    mid = os.urandom(32)
    nss.create_master_key(mid, "nss-master")
    assert (mid, "nss-master") in nss.list_master_keys()
    check = nss.check_master_key(mid)
    assert check.sensitive and not check.extractable and not check.value_readable
    # NSS's softoken (not in FIPS mode) wraps a CKA_EXTRACTABLE=false key all the same, and
    # the check says so: `hsmkms doctor --deep` reports such keys UNSEALED. A test token only.
    assert check.wrappable
    iv, aad = os.urandom(12), b"context"
    sealed = nss.encrypt(mid, iv, b"secret data", aad)
    assert nss.decrypt(mid, iv, sealed, aad) == b"secret data"
    with pytest.raises(IntegrityError):
        nss.decrypt(mid, iv, sealed, b"other context")
    assert len(nss.random(32)) == 32
    nss.destroy_master_key(mid)
    assert not nss.has_master_key(mid)


@pytest.mark.slow
def test_an_rsa_pair_made_and_wrapped_on_nss_unwraps_to_pkcs8(nss):
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    mid = os.urandom(32)
    nss.create_master_key(mid, "nss-wrapping")
    public, wrapped = nss.generate_wrapped_key_pair(DataKeyPairSpec.RSA_2048, mid)
    private = load_der_private_key(nss.unwrap_private_key(mid, wrapped), None)
    assert private.key_size == 2048 and len(public) > 256
    nss.destroy_master_key(mid)


def test_data_keys_through_the_library_face_on_an_nss_home(nss_settings: Settings, nss):
    import hsmkms

    # The home of `nss`: NSS opens one database per module load and process.
    kms = hsmkms.KMS(nss_settings)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    made = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"a": "b"})
    opened = kms.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert opened["Plaintext"] == made["Plaintext"]
    blob = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)
    assert len(kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"]) == 16
    pair = kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    assert (
        kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"]
        == (pair["PrivateKeyPlaintext"])
    )
    kms.close()


def test_a_second_nss_database_in_one_process_is_refused_by_name(nss, tmp_path: Path):
    from hsmkms.hsm import TokenUnavailable

    other = f"configdir='sql:{tmp_path}'"
    with pytest.raises(TokenUnavailable, match="already initialised in this process"):
        open_token(NSS_MODULE, NSS_TOKEN_LABEL, "pin", init_args=other)


@pytest.mark.slow
def test_boto3_against_hsmkms_serve_hsm_nss(tmp_path: Path):
    from server import ServerProcess

    with ServerProcess(tmp_path / "home", extra_args=("--hsm", "nss")) as srv:
        kms = srv.client()
        key_id = kms.create_key(Description="on NSS")["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"over HTTP")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over HTTP"
        made = kms.generate_data_key(KeyId=key_id, KeySpec="AES_128")
        assert kms.decrypt(CiphertextBlob=made["CiphertextBlob"])["Plaintext"] == made["Plaintext"]
        assert srv.operator_get("/health").json["token"]["manufacturer"] == "Mozilla Foundation"
    assert (tmp_path / "home" / "nssdb" / "key4.db").exists()
