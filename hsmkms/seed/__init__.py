"""Seeded keys: a YAML or TOML file of keys with fixed KeyIds, applied at start-up by
``hsmkms serve --seed FILE`` (the ``seed`` setting), idempotently (docs/seeding.md).

A key's material is given inline (base64; PEM text for a private key), by a file path, or not
at all (generated on the token, Origin AWS_KMS). Given material goes through the path a client
takes: CreateKey ``Origin=EXTERNAL``, GetParametersForImport, the material wrapped here with
``cryptography`` as a client wraps it (RSA-OAEP with SHA-1, or RSA-OAEP of an AES key followed
by that key's AES Key Wrap with Padding of the PKCS#8), then ImportKeyMaterial. Because the
KeyMaterialId is deterministic in (key, material), two fresh homes seeded with one file make
blobs that each other decrypts, and a reimport tells the same material from another.

:func:`load` reads and checks the whole file first: every problem names the entry
(``keys[<index>] (KeyId <id>)``) and the field. :func:`apply` then works in four steps, so
that a failure leaves nothing half-applied:

1. read-only checks against the store, for every entry (a key that exists must match the
   entry's account, spec and usage; an alias may not point to another key; a policy must
   pass the lockout check);
2. the material checks: an existing key with material in the file has it imported again as
   EXISTING_KEY_MATERIAL (the same material is accepted and changes nothing; another is
   IncorrectKeyMaterialException, named as the entry's error);
3. the keys that do not exist are created, each with the file's material, aliases and policy;
4. the existing keys' description, tags, aliases and policy are made to match the file.

A failure in steps 3 or 4 deletes the keys this run created (their token objects first) and
raises one :class:`SeedError` naming the entry. Every operation goes through
``Service.dispatch`` as the account's root principal, so the operations' own rules apply.
"""

from hsmkms.seed.applying import Outcome, apply, apply_file, root_caller
from hsmkms.seed.material import checked_material, wrap
from hsmkms.seed.schema import FIELDS, Entry, Seed, SeedError, SeedField, load

__all__ = [
    "FIELDS",
    "Entry",
    "Outcome",
    "Seed",
    "SeedError",
    "SeedField",
    "apply",
    "apply_file",
    "checked_material",
    "load",
    "root_caller",
    "wrap",
]
