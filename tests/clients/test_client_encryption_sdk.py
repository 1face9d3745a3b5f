"""The AWS Encryption SDK for Python (4.x) with KMS master key providers backed by hsmkms.

The Encryption SDK makes its own botocore KMS clients (one per region, taken from the key ARN),
so hsmkms is reached the way any botocore program reaches a custom endpoint:

* a botocore session whose profile names ``endpoint_url`` in its config file (the provider's
  ``botocore_session=``), credentials from the home's ``credentials`` file; or
* the default session and ``AWS_ENDPOINT_URL_KMS`` in the environment.

It calls GenerateDataKey for the first key of a provider, Encrypt for each further key and
Decrypt to open a message, all with the message's encryption context.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import aws_encryption_sdk
import boto3.session
import botocore.session
import pytest
from aws_encryption_sdk.exceptions import DecryptKeyError, MasterKeyProviderError
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_encryption_sdk.key_providers.kms import (
    DiscoveryAwsKmsMasterKeyProvider,
    DiscoveryFilter,
    StrictAwsKmsMasterKeyProvider,
)
from server import ServerProcess

CONTEXT = {"purpose": "encryption-sdk-test", "tenant": "acme"}
ONE_MIB = 1024 * 1024


@pytest.fixture(scope="module")
def esdk() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


@pytest.fixture(scope="module")
def aws_config(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AWS config file whose ``hsmkms`` profile sends KMS calls to the server."""
    path = tmp_path_factory.mktemp("esdk") / "config"
    path.write_text(f"[profile hsmkms]\nendpoint_url = {server.url}\n")
    return path


def hsmkms_session(server: ServerProcess, aws_config: Path) -> botocore.session.Session:
    session = botocore.session.Session(profile="hsmkms")
    session.set_config_variable("config_file", str(aws_config))
    session.set_config_variable("credentials_file", str(server.credentials))
    return session


@pytest.fixture(scope="module")
def session(server: ServerProcess, aws_config: Path) -> botocore.session.Session:
    return hsmkms_session(server, aws_config)


@pytest.fixture(scope="module")
def key_arns(session: botocore.session.Session) -> list[str]:
    """Three hsmkms keys: the message goes to the first two, the third never sees it."""
    kms = session.create_client("kms")
    return [
        kms.create_key(Description=f"Encryption SDK key {n}")["KeyMetadata"]["Arn"]
        for n in range(3)
    ]


def provider(session: botocore.session.Session, *arns: str) -> StrictAwsKmsMasterKeyProvider:
    return StrictAwsKmsMasterKeyProvider(key_ids=list(arns), botocore_session=session)


def account_of(arn: str) -> str:
    return arn.split(":")[4]


def test_a_1_mib_message_round_trips_with_its_encryption_context_under_two_hsmkms_keys(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    plaintext = os.urandom(ONE_MIB)
    keys = provider(session, key_arns[0], key_arns[1])
    ciphertext, header = esdk.encrypt(
        source=plaintext, key_provider=keys, encryption_context=CONTEXT
    )
    assert len(ciphertext) > ONE_MIB
    assert {edk.key_provider.key_info.decode() for edk in header.encrypted_data_keys} == {
        key_arns[0],
        key_arns[1],
    }
    assert {edk.key_provider.provider_id for edk in header.encrypted_data_keys} == {"aws-kms"}

    decrypted, decrypted_header = esdk.decrypt(source=ciphertext, key_provider=keys)
    assert decrypted == plaintext
    assert CONTEXT.items() <= decrypted_header.encryption_context.items()


def test_a_small_message_opens_with_either_key_alone(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    plaintext = b"attack at dawn"
    ciphertext, _ = esdk.encrypt(
        source=plaintext,
        key_provider=provider(session, key_arns[0], key_arns[1]),
        encryption_context=CONTEXT,
    )
    # The first key's data key came from GenerateDataKey, the second's from Encrypt.
    for arn in key_arns[:2]:
        decrypted, decrypted_header = esdk.decrypt(
            source=ciphertext, key_provider=provider(session, arn)
        )
        assert decrypted == plaintext
        assert CONTEXT.items() <= decrypted_header.encryption_context.items()


def test_an_empty_message_round_trips(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    keys = provider(session, key_arns[0])
    ciphertext, _ = esdk.encrypt(source=b"", key_provider=keys, encryption_context=CONTEXT)
    decrypted, _ = esdk.decrypt(source=ciphertext, key_provider=keys)
    assert decrypted == b""


def test_a_provider_that_knows_none_of_the_message_keys_cannot_decrypt_it(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    ciphertext, _ = esdk.encrypt(
        source=b"not for key three",
        key_provider=provider(session, key_arns[0]),
        encryption_context=CONTEXT,
    )
    with pytest.raises(DecryptKeyError):
        esdk.decrypt(source=ciphertext, key_provider=provider(session, key_arns[2]))


def test_a_message_whose_data_key_blob_was_altered_cannot_be_decrypted(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    keys = provider(session, key_arns[0])
    ciphertext, header = esdk.encrypt(
        source=b"integrity", key_provider=keys, encryption_context=CONTEXT
    )
    (edk,) = header.encrypted_data_keys
    at = ciphertext.index(edk.encrypted_data_key) + len(edk.encrypted_data_key) - 1
    altered = ciphertext[:at] + bytes([ciphertext[at] ^ 0x01]) + ciphertext[at + 1 :]
    # hsmkms answers InvalidCiphertextException; the SDK reports that no data key opened.
    with pytest.raises(DecryptKeyError):
        esdk.decrypt(source=altered, key_provider=keys)


def test_a_discovery_provider_decrypts_only_for_a_trusted_account(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    ciphertext, _ = esdk.encrypt(
        source=b"discovered",
        key_provider=provider(session, key_arns[0]),
        encryption_context=CONTEXT,
    )
    ours = DiscoveryAwsKmsMasterKeyProvider(
        botocore_session=session,
        discovery_filter=DiscoveryFilter(account_ids=[account_of(key_arns[0])], partition="aws"),
    )
    decrypted, _ = esdk.decrypt(source=ciphertext, key_provider=ours)
    assert decrypted == b"discovered"

    another_account = (
        "111122223333" if account_of(key_arns[0]) != "111122223333" else "444455556666"
    )
    theirs = DiscoveryAwsKmsMasterKeyProvider(
        botocore_session=session,
        discovery_filter=DiscoveryFilter(account_ids=[another_account], partition="aws"),
    )
    with pytest.raises((DecryptKeyError, MasterKeyProviderError)):
        esdk.decrypt(source=ciphertext, key_provider=theirs)


def test_the_default_session_reaches_hsmkms_through_aws_endpoint_url_kms(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    server: ServerProcess,
    key_arns: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(server.credentials))
    monkeypatch.setenv("AWS_PROFILE", "hsmkms")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.url)

    keys = StrictAwsKmsMasterKeyProvider(key_ids=[key_arns[1]])  # no session given
    message = secrets.token_bytes(3000)
    ciphertext, _ = esdk.encrypt(source=message, key_provider=keys, encryption_context=CONTEXT)
    decrypted, decrypted_header = esdk.decrypt(source=ciphertext, key_provider=keys)
    assert decrypted == message
    assert CONTEXT.items() <= decrypted_header.encryption_context.items()


def test_an_aws_kms_keyring_encrypts_and_decrypts_through_hsmkms(
    esdk: aws_encryption_sdk.EncryptionSDKClient,
    session: botocore.session.Session,
    key_arns: list[str],
) -> None:
    """The keyring path of Encryption SDK 4 (needs aws-cryptographic-material-providers)."""
    mpl = pytest.importorskip(
        "aws_cryptographic_material_providers.mpl",
        reason="the AWS KMS keyring needs aws-cryptographic-material-providers",
    )
    from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
    from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput

    kms_client = boto3.session.Session(botocore_session=session).client("kms")
    providers = mpl.AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
    keyring = providers.create_aws_kms_keyring(
        input=CreateAwsKmsKeyringInput(kms_key_id=key_arns[0], kms_client=kms_client)
    )
    for plaintext in (b"a small message", os.urandom(ONE_MIB)):
        ciphertext, header = esdk.encrypt(
            source=plaintext, keyring=keyring, encryption_context=CONTEXT
        )
        assert [edk.key_provider.key_info.decode() for edk in header.encrypted_data_keys] == [
            key_arns[0]
        ]
        decrypted, decrypted_header = esdk.decrypt(
            source=ciphertext, keyring=keyring, encryption_context=CONTEXT
        )
        assert decrypted == plaintext
        assert CONTEXT.items() <= decrypted_header.encryption_context.items()
        # A message made by the keyring opens with the master key provider too, and back.
        reopened, _ = esdk.decrypt(source=ciphertext, key_provider=provider(session, key_arns[0]))
        assert reopened == plaintext
