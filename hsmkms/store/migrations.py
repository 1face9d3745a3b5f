"""Schema migrations, applied in order once each; portable SQL (SQLite and PostgreSQL).

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: keys, their materials, aliases and tags.
    [
        """CREATE TABLE keys (
            key_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            region TEXT NOT NULL,
            key_usage TEXT NOT NULL,
            key_spec TEXT NOT NULL,
            origin TEXT NOT NULL,
            key_manager TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            policy TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            current_material_id TEXT,
            deletion_date REAL,
            pending_window_days INTEGER,
            multi_region INTEGER NOT NULL DEFAULT 0,
            rotation_enabled INTEGER NOT NULL DEFAULT 0,
            rotation_period_days INTEGER,
            next_rotation REAL
        )""",
        "CREATE INDEX keys_by_account ON keys (account_id, region, key_id)",
        "CREATE INDEX keys_by_state ON keys (state, deletion_date)",
        """CREATE TABLE key_materials (
            material_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL REFERENCES keys (key_id),
            created_at REAL NOT NULL,
            rotation_type TEXT
        )""",
        "CREATE INDEX key_materials_by_key ON key_materials (key_id, created_at)",
        """CREATE TABLE aliases (
            account_id TEXT NOT NULL,
            region TEXT NOT NULL,
            alias_name TEXT NOT NULL,
            key_id TEXT NOT NULL REFERENCES keys (key_id),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (account_id, region, alias_name)
        )""",
        "CREATE INDEX aliases_by_key ON aliases (key_id)",
        """CREATE TABLE tags (
            key_id TEXT NOT NULL REFERENCES keys (key_id),
            tag_key TEXT NOT NULL,
            tag_value TEXT NOT NULL,
            PRIMARY KEY (key_id, tag_key)
        )""",
        # Tombstones: a blob of a deleted key is NotFoundException, an unknown key id in a
        # blob is InvalidCiphertextException (it was never ours, or it was tampered with).
        """CREATE TABLE deleted_keys (
            key_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            region TEXT NOT NULL,
            deleted_at REAL NOT NULL
        )""",
    ],
    # grants: who may use a key for which operations, and under which encryption context.
    # operations and grant_constraints are JSON text (portable); no foreign key to keys: a
    # key's deletion removes its grants explicitly (Store.delete_key).
    [
        """CREATE TABLE grants (
            grant_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            grantee_principal TEXT NOT NULL,
            retiring_principal TEXT,
            issuing_account TEXT NOT NULL,
            operations TEXT NOT NULL,
            grant_constraints TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX grants_by_key ON grants (key_id, grantee_principal)",
        "CREATE INDEX grants_by_retiring_principal ON grants (retiring_principal, grant_id)",
    ],
    # rotation and leases: a material records the due date of the automatic rotation that
    # made it (unique per key, so one due date yields one rotation however many processes
    # try); leases let processes and nodes that share the store take turns at a duty.
    [
        "ALTER TABLE key_materials ADD COLUMN rotation_due REAL",
        "CREATE UNIQUE INDEX key_materials_by_due ON key_materials (key_id, rotation_due)",
        "CREATE INDEX keys_by_next_rotation ON keys (rotation_enabled, state, next_rotation)",
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
    ],
    # asymmetric KMS keys: a material's public key (SubjectPublicKeyInfo DER), which Verify,
    # GetPublicKey and asymmetric Encrypt use on the host; NULL for symmetric and HMAC keys.
    [
        "ALTER TABLE key_materials ADD COLUMN public_key BLOB",
    ],
    # post-quantum KMS keys: the private seed, sealed (AES-256-GCM) under the material's
    # token master key (service/host_keys.py): never in plaintext here.
    [
        "ALTER TABLE key_materials ADD COLUMN sealed_private BLOB",
    ],
    # imported key material (Origin EXTERNAL): a material's import state (NULL for material
    # the token generated), whether it waits for RotateKeyOnDemand, its expiry; and the
    # import parameters GetParametersForImport handed out (each names a wrapping key on the
    # token, destroyed when they expire).
    [
        "ALTER TABLE key_materials ADD COLUMN import_state TEXT",
        "ALTER TABLE key_materials ADD COLUMN pending_rotation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE key_materials ADD COLUMN expiration_model TEXT",
        "ALTER TABLE key_materials ADD COLUMN valid_to REAL",
        "ALTER TABLE key_materials ADD COLUMN description TEXT",
        "CREATE INDEX key_materials_by_import ON key_materials (import_state, valid_to)",
        """CREATE TABLE import_parameters (
            import_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            wrapping_algorithm TEXT NOT NULL,
            wrapping_spec TEXT NOT NULL,
            public_key BLOB NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            destroyed INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX import_parameters_by_key ON import_parameters (key_id)",
        "CREATE INDEX import_parameters_by_expiry ON import_parameters (destroyed, expires_at)",
    ],
    # multi-Region keys: one record per Region under the ref ``<key id>~<region>``
    # (store/base.py key_ref), ``family`` the bare key id all records of a key share, and
    # the primary's Region. Their materials are the key's, not one record's: key_materials
    # is rebuilt without its foreign key to keys (columns and indexes unchanged).
    [
        "ALTER TABLE keys ADD COLUMN family TEXT",
        "UPDATE keys SET family = key_id",
        "ALTER TABLE keys ADD COLUMN primary_region TEXT",
        "CREATE INDEX keys_by_family ON keys (family)",
        """CREATE TABLE key_materials_7 (
            material_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            rotation_type TEXT,
            rotation_due REAL,
            public_key BLOB,
            sealed_private BLOB,
            import_state TEXT,
            pending_rotation INTEGER NOT NULL DEFAULT 0,
            expiration_model TEXT,
            valid_to REAL,
            description TEXT
        )""",
        """INSERT INTO key_materials_7 (material_id, key_id, created_at, rotation_type,
            rotation_due, public_key, sealed_private, import_state, pending_rotation,
            expiration_model, valid_to, description)
        SELECT material_id, key_id, created_at, rotation_type, rotation_due, public_key,
            sealed_private, import_state, pending_rotation, expiration_model, valid_to,
            description FROM key_materials""",
        "DROP TABLE key_materials",
        "ALTER TABLE key_materials_7 RENAME TO key_materials",
        "CREATE INDEX key_materials_by_key ON key_materials (key_id, created_at)",
        "CREATE UNIQUE INDEX key_materials_by_due ON key_materials (key_id, rotation_due)",
        "CREATE INDEX key_materials_by_import ON key_materials (import_state, valid_to)",
    ],
    # GetKeyLastUsage: each key record's last successful cryptographic use (key_id is the
    # record's ref: a multi-Region key's records track their use apart), written in batches.
    # The day this migration ran is when tracking started (TrackingStartDate).
    [
        """CREATE TABLE key_usage (
            key_id TEXT PRIMARY KEY,
            operation TEXT NOT NULL,
            used_at REAL NOT NULL,
            request_id TEXT NOT NULL,
            event_id TEXT NOT NULL
        )""",
    ],
    # custom key stores: a key store's record (its secret, a PIN or an XKS proxy credential,
    # stays in a 0600 file of the home, never here), and a key's store and external key id.
    [
        """CREATE TABLE custom_key_stores (
            store_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            region TEXT NOT NULL,
            name TEXT NOT NULL,
            store_type TEXT NOT NULL,
            state TEXT NOT NULL,
            error_code TEXT,
            created_at REAL NOT NULL,
            cluster_id TEXT,
            trust_anchor TEXT,
            xks_uri_endpoint TEXT,
            xks_uri_path TEXT,
            xks_connectivity TEXT,
            xks_access_key_id TEXT
        )""",
        "CREATE UNIQUE INDEX custom_key_stores_by_name "
        "ON custom_key_stores (account_id, region, name)",
        "ALTER TABLE keys ADD COLUMN custom_key_store_id TEXT",
        "ALTER TABLE keys ADD COLUMN xks_key_id TEXT",
        "CREATE INDEX keys_by_custom_key_store ON keys (custom_key_store_id)",
    ],
    # the wrapped master-key mode: domain keys (token objects; their state here) and each key
    # material wrapped under one (store/wraps.py). Never an unwrapped material.
    [
        """CREATE TABLE domain_keys (
            domain_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE wrapped_materials (
            material_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            spec TEXT NOT NULL,
            key_use TEXT,
            domain_id TEXT NOT NULL,
            mechanism TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            public_key BLOB,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX wrapped_materials_by_domain ON wrapped_materials (domain_id, material_id)",
    ],
]
