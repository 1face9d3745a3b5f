"""The wrapped master-key mode (``master_keys = "wrapped"``, issue 22): key materials wrapped in
the store under a token-resident domain key, unwrapped into session objects on use.

The whole suite also runs in this mode (``HSMKMS_TEST_MASTER_KEYS=wrapped``, a CI leg); these
tests check what is particular to it: the token's object count does not grow with the number
of keys, the store holds wraps that only the domain key opens, a cold key costs one unwrap and
no search, the bounded cache destroys what it pushes out, and doctor checks every wrap."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from hsmkms.errors import KMSError


@pytest.fixture(scope="module")
def wrapped(settings, token, tmp_path_factory):
    """The library face of a wrapped-mode service on the session's token, with a store of
    its own (so that its wraps and domain keys are this module's alone)."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS
    from hsmkms.store import open_store

    path = tmp_path_factory.mktemp("wrapped") / "wrapped.sqlite3"
    svc = build_service(settings.replace(master_keys="wrapped"), token, open_store(str(path)))
    yield KMS.from_service(svc)
    svc.pool.close()
    svc.store.close()


def _masters(kms):
    return kms.service.masters.home  # the router's home: the WrappedMaterials


def _token_objects(token) -> int:
    return len(token.list_master_keys())


def test_token_objects_do_not_grow_with_the_number_of_keys(wrapped, token):
    first = wrapped.create_key()["KeyMetadata"]["KeyId"]  # makes the domain key if none yet
    before = _token_objects(token)
    made = [wrapped.create_key()["KeyMetadata"]["KeyId"] for _ in range(30)]
    made.append(
        wrapped.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
            "KeyId"
        ]
    )
    made.append(
        wrapped.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    )
    assert _token_objects(token) == before
    store = wrapped.service.store
    for key_id in [first, *made]:
        material = wrapped.service.store.get_key(key_id).current_material_id
        wrap = store.get_wrap(material)
        assert wrap is not None and wrap.key_id == key_id
        assert not token.has_master_key(bytes.fromhex(material)) or token.wrapping.is_loaded(
            bytes.fromhex(material)
        )


def test_the_store_holds_a_wrap_that_only_the_domain_key_opens(wrapped):
    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    blob = wrapped.encrypt(KeyId=key_id, Plaintext=b"payroll")["CiphertextBlob"]
    material = wrapped.service.store.get_key(key_id).current_material_id
    wrap = wrapped.service.store.get_wrap(material)
    assert wrap.mechanism == "AES_KEY_WRAP_PAD" and len(wrap.wrapped) == 40  # RFC 5649 of 32
    assert wrap.spec == "SYMMETRIC_DEFAULT" and wrap.public_key is None
    # What the token answers for the material once unwrapped: sealed, as doctor checks it.
    assert _masters(wrapped).unsound(material) == []
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"payroll"


def test_a_cold_key_costs_one_unwrap_and_no_search(wrapped, token, monkeypatch):
    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    blob = wrapped.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    material = bytes.fromhex(wrapped.service.store.get_key(key_id).current_material_id)
    assert token.wrapping.unload(material)  # as if pushed out, or another process's first use
    searches = []
    real = token._search
    monkeypatch.setattr(token, "_search", lambda *a, **k: searches.append(1) or real(*a, **k))
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert searches == []
    assert token.wrapping.is_loaded(material)


def test_the_cache_is_bounded_and_destroys_what_it_pushes_out(wrapped, token):
    keys = [wrapped.create_key()["KeyMetadata"]["KeyId"] for _ in range(6)]
    blobs = {k: wrapped.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys}
    capacity = token.wrapping.capacity
    token.wrapping.capacity = 3
    try:
        assert token.wrapping.loaded() <= 3
        for _ in range(2):
            for key_id, blob in blobs.items():  # each use of a pushed-out key unwraps it again
                assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == key_id.encode()
                assert token.wrapping.loaded() <= 3
    finally:
        token.wrapping.capacity = capacity


def test_asymmetric_and_hmac_keys_are_wrapped_too(wrapped):
    sign = wrapped.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    public = wrapped.get_public_key(KeyId=sign["KeyId"])["PublicKey"]
    signature = wrapped.sign(KeyId=sign["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")[
        "Signature"
    ]
    load_der_public_key(public).verify(signature, b"m", ec.ECDSA(hashes.SHA256()))  # offline
    rsa = wrapped.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    blob = wrapped.encrypt(
        KeyId=rsa["KeyId"], Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_256"
    )["CiphertextBlob"]
    assert (
        wrapped.decrypt(
            KeyId=rsa["KeyId"], CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256"
        )["Plaintext"]
        == b"p"
    )
    mac_key = wrapped.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    mid = mac_key["KeyMetadata"]["KeyId"]
    mac = wrapped.generate_mac(KeyId=mid, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert wrapped.verify_mac(KeyId=mid, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_384")[
        "MacValid"
    ]
    store = wrapped.service.store
    specs = {
        store.get_wrap(store.get_key(k).current_material_id).spec
        for k in (sign["KeyId"], rsa["KeyId"], mid)
    }
    assert specs == {"ECC_NIST_P256", "RSA_2048", "HMAC_384"}


def test_a_domain_key_rotation_moves_every_wrap_and_destroys_the_old_key(wrapped, token):
    masters = _masters(wrapped)
    keys = [wrapped.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)]
    blobs = {k: wrapped.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys}
    old = masters.active_domain()
    new = masters.rotate_domain_key()
    assert new != old
    store = wrapped.service.store
    assert {k.domain_id: k.state for k in store.domain_keys()}[old] == "retiring"
    while True:
        step = masters.rewrap_step(batch=4)
        for key_id, blob in blobs.items():  # every old ciphertext decrypts throughout
            assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == key_id.encode()
        if not step.moved and not step.destroyed:
            break
    assert store.count_wraps(old) == 0
    assert old not in {k.domain_id for k in store.domain_keys()}  # destroyed
    assert not token.has_master_key(bytes.fromhex(old))
    for key_id in keys:  # a fresh unwrap goes through the new domain key
        token.wrapping.unload(bytes.fromhex(store.get_key(key_id).current_material_id))
        assert wrapped.decrypt(CiphertextBlob=blobs[key_id])["Plaintext"] == key_id.encode()


def test_doctor_checks_each_wrap_against_its_domain_key(wrapped):
    from hsmkms.service import doctor
    from hsmkms.store.wraps import Rewrap

    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    store, masters = wrapped.service.store, _masters(wrapped)
    report = doctor.check(store, masters, deep=True)
    assert not report.drift and report.checked >= 1
    assert report.wrapped >= 1 and report.domain_keys >= 1 and "wrapped:" in report.lines()[0]
    material = store.get_key(key_id).current_material_id
    wrap = store.get_wrap(material)
    tampered = bytes([wrap.wrapped[0] ^ 1]) + wrap.wrapped[1:]
    store.rewrap([Rewrap(material, wrap.domain_id, wrap.domain_id, wrap.mechanism, tampered)])
    try:
        report = doctor.check(store, masters, deep=True)
        found = [u for u in report.unsealed if u.material_id == material]
        assert found and "does not open" in found[0].why
    finally:
        store.rewrap(
            [Rewrap(material, wrap.domain_id, wrap.domain_id, wrap.mechanism, wrap.wrapped)]
        )
    assert not doctor.check(store, masters, deep=True).drift
    # Under a domain key the token lacks, the wrap holds nothing usable: MISSING, drift.
    absent = os.urandom(32).hex()
    store.rewrap([Rewrap(material, wrap.domain_id, absent, wrap.mechanism, wrap.wrapped)])
    try:
        report = doctor.check(store, masters)
        assert report.drift and [m.material_id for m in report.missing] == [material]
    finally:
        store.rewrap([Rewrap(material, absent, wrap.domain_id, wrap.mechanism, wrap.wrapped)])


def test_a_destroyed_material_is_gone_from_store_and_cache(wrapped, token):
    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    material = wrapped.service.store.get_key(key_id).current_material_id
    _masters(wrapped).destroy(material)
    assert wrapped.service.store.get_wrap(material) is None
    assert not token.wrapping.is_loaded(bytes.fromhex(material))
    with pytest.raises(KMSError):
        wrapped.encrypt(KeyId=key_id, Plaintext=b"x")


def test_the_mode_is_a_setting_its_flag_and_its_variable():
    from hsmkms.cli import build_parser
    from hsmkms.config import ConfigError, Settings

    assert Settings.__dataclass_fields__["master_keys"].default == "token"
    assert Settings.load(env={"HSMKMS_MASTER_KEYS": "wrapped"}).master_keys == "wrapped"
    args = build_parser().parse_args(["serve", "--master-keys", "wrapped"])
    assert args.master_keys == "wrapped"
    with pytest.raises(ConfigError, match="master_keys"):
        Settings.load(env={"HSMKMS_MASTER_KEYS": "tokens"})
    assert os.environ.get("HSMKMS_PIN") is None


def test_a_create_key_the_store_refused_leaves_no_wrap(wrapped, token, monkeypatch):
    from hsmkms import errors
    from hsmkms.store import StoreFull

    store = wrapped.service.store
    wraps, loaded = store.count_wraps(), token.wrapping.loaded()

    def full(*args: object, **kwargs: object) -> None:
        raise StoreFull("could not commit: the disk is full")

    monkeypatch.setattr(store, "create_key", full)
    with pytest.raises(errors.KMSInternalException, match="out of disk space"):
        wrapped.create_key()
    monkeypatch.undo()
    assert store.count_wraps() == wraps and token.wrapping.loaded() == loaded


def test_a_material_whose_wrap_is_gone_is_key_unavailable(wrapped, token):
    from hsmkms import errors

    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    material = wrapped.service.store.get_key(key_id).current_material_id
    assert wrapped.service.store.delete_wrap(material)
    token.wrapping.unload(bytes.fromhex(material))
    with pytest.raises(errors.KeyUnavailableException):
        wrapped.generate_data_key(KeyId=key_id, KeySpec="AES_256")


def test_token_max_objects_does_not_count_wrapped_materials(wrapped, settings, token):
    """A small HSM (a YubiHSM 2 holds 256 objects) with many keys: the wrapped mode's reason."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS

    store = wrapped.service.store
    svc = build_service(settings.replace(master_keys="wrapped", token_max_objects=1), token, store)
    try:
        kms = KMS.from_service(svc)
        for _ in range(3):
            kms.create_key()
            kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    finally:
        svc.pool.close()


def test_a_search_of_the_token_leaves_the_loaded_keys_alone(wrapped, token):
    """Found by the migration's server tests: keys unwrapped under a domain key object of a
    search's session died when the next search closed it (the library was re-initialised and
    requests in flight answered KeyUnavailableException)."""
    key_id = wrapped.create_key()["KeyMetadata"]["KeyId"]
    domain = bytes.fromhex(_masters(wrapped).active_domain())
    token._calls.handles.drop(domain)  # as if another process had made the domain key:
    assert token.has_master_key(domain)  # a search finds it, on a session of the search's...
    blob = wrapped.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    material = bytes.fromhex(wrapped.service.store.get_key(key_id).current_material_id)
    assert token.wrapping.unload(material)
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"  # loaded again
    generation = token._library.generation
    assert not token.has_master_key(os.urandom(32))  # ...the next search closes
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    assert token._library.generation == generation  # no re-initialisation
    assert token.wrapping.is_loaded(material)


def test_a_wrap_that_does_not_open_holds_its_domain_key_not_the_rotation(wrapped, token, settings):
    from hsmkms.compose import master_keys
    from hsmkms.store.wraps import Rewrap

    store, masters = wrapped.service.store, _masters(wrapped)
    keys = [wrapped.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
    blobs = {k: wrapped.encrypt(KeyId=k, Plaintext=b"r")["CiphertextBlob"] for k in keys}
    bad = store.get_wrap(store.get_key(keys[0]).current_material_id)
    old = masters.active_domain()
    token.wrapping.unload(bytes.fromhex(bad.material_id))
    damaged = bytes([bad.wrapped[0] ^ 1]) + bad.wrapped[1:]
    store.rewrap([Rewrap(bad.material_id, old, old, bad.mechanism, damaged)])
    masters.rotate_domain_key()
    masters.maintain()  # moves every wrap it can, then stops
    assert store.count_wraps(old) == 1 and token.has_master_key(bytes.fromhex(old))
    assert {k.domain_id: k.state for k in store.domain_keys()}[old] == "retiring"
    for key_id in keys[1:]:
        assert wrapped.decrypt(CiphertextBlob=blobs[key_id])["Plaintext"] == b"r"
    # Repaired (say, from a backup of the store), it moves, and the old domain key goes.
    store.rewrap([Rewrap(bad.material_id, old, old, bad.mechanism, bad.wrapped)])
    fresh = master_keys(settings.replace(master_keys="wrapped"), token, store)
    fresh.maintain()
    assert store.count_wraps(old) == 0 and not token.has_master_key(bytes.fromhex(old))
    assert wrapped.decrypt(CiphertextBlob=blobs[keys[0]])["Plaintext"] == b"r"


def test_concurrent_first_create_keys_on_a_fresh_home_make_one_domain_key(
    settings, token, tmp_path
):
    """Two services on one fresh store (two processes, or two nodes), four requests each at
    once: one domain key for the home, the others' destroyed, every key usable."""
    import threading

    from hsmkms.compose import build_service
    from hsmkms.kms import KMS
    from hsmkms.modes.token_objects import DOMAIN_LABEL
    from hsmkms.store import open_store

    def domain_objects() -> set[bytes]:
        return {mid for mid, label in token.list_master_keys() if label.startswith(DOMAIN_LABEL)}

    before = domain_objects()
    path = str(tmp_path / "fresh.sqlite3")
    services = [build_service(settings.replace(master_keys="wrapped"), token, open_store(path))
                for _ in range(2)]  # fmt: skip
    made: list[str] = []
    failed: list[BaseException] = []
    start = threading.Barrier(8)

    def create(kms: KMS) -> None:
        start.wait()
        try:
            made.append(kms.create_key()["KeyMetadata"]["KeyId"])
        except BaseException as exc:  # reported below
            failed.append(exc)

    threads = [threading.Thread(target=create, args=(KMS.from_service(services[i % 2]),))
               for i in range(8)]  # fmt: skip
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failed and len(made) == 8, failed
        [domain] = services[0].store.domain_keys()
        assert domain.state == "active"
        assert domain_objects() - before == {bytes.fromhex(domain.domain_id)}
        for i, key_id in enumerate(made):
            kms = KMS.from_service(services[(i + 1) % 2])
            blob = kms.encrypt(KeyId=key_id, Plaintext=b"one domain key")["CiphertextBlob"]
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"one domain key"
    finally:
        for svc in services:
            svc.pool.close()
            svc.store.close()
        for mid in domain_objects() - before:
            token.destroy_master_key(mid)
