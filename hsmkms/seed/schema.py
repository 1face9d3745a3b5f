"""The seed file's schema (:data:`FIELDS`, the one place it is described) and :func:`load`,
which reads and checks a whole file before anything is applied: every problem, listed at
once, names the entry (``keys[<index>] (KeyId <id>)``) and the field."""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from hsmkms import errors, model, pq
from hsmkms.seed.material import read_material, readable_by_others
from hsmkms.specs import KeySpec, KeyUsage

# How a seed file is read, by its suffix.
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
_ACCOUNT = re.compile(r"^\d{12}$")


class SeedError(Exception):
    """The seed file cannot be applied; the message names the file, the entry and the field."""


# -- the schema: the one place it is described -------------------------------------------------
@dataclass(frozen=True)
class SeedField:
    """One field of a key entry: its name, the types it may have, what it means."""

    name: str
    kinds: tuple[type, ...]
    meaning: str
    required: bool = False


# CreateKey's members keep AWS's spelling; hsmkms's own fields are in snake case.
FIELDS: tuple[SeedField, ...] = (
    SeedField("KeyId", (str,), "the key's id, a lower-case UUID: the same on every home", True),
    SeedField("Description", (str,), "CreateKey's Description"),
    SeedField("KeySpec", (str,), "CreateKey's KeySpec (default SYMMETRIC_DEFAULT)"),
    SeedField("KeyUsage", (str,), "CreateKey's KeyUsage (default: the spec's first usage)"),
    SeedField("Tags", (dict,), "tag key -> tag value, both strings"),
    SeedField("Policy", (str, dict), "the key policy: JSON text or a mapping"),
    SeedField("Aliases", (list,), "alias names (alias/...) that point to the key"),
    SeedField("account_id", (str,), "the key's account (default: the home's first identity's)"),
    SeedField("material", (str,), "the key material: base64 (or PEM text of a private key)"),
    SeedField("material_file", (str,), "a file holding the key material, relative to this file"),
)
_FIELD = {f.name: f for f in FIELDS}
TOP_LEVEL = ("keys",)
_KIND_NAMES: dict[type, str] = {str: "a string", dict: "a mapping", list: "a list"}


@dataclass(frozen=True)
class Entry:
    """One checked key entry of a seed file."""

    index: int
    key_id: str
    spec: KeySpec
    usage: KeyUsage
    account_id: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    policy: str | None = None
    aliases: tuple[str, ...] | None = None
    # Raw bytes (symmetric, HMAC) or PKCS#8 DER (a private key); never printed.
    material: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"keys[{self.index}] (KeyId {self.key_id})"


@dataclass(frozen=True)
class Seed:
    path: Path
    entries: tuple[Entry, ...]


# -- loading -----------------------------------------------------------------------------------
def load(path: str | os.PathLike[str]) -> Seed:
    """Read and check the seed file at ``path``; :class:`SeedError` lists every problem."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SeedError(
            f"seed file {path}: name it *.yaml, *.yml or *.toml (the suffix says how to read it)"
        )
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        raw = path.read_bytes()
    except OSError as exc:
        raise SeedError(f"cannot read seed file {path}: {exc.strerror}") from None
    document = _parse(kind, raw, path)
    problems: list[str] = []
    if not isinstance(document, dict):
        raise SeedError(f"seed file {path}: the top level must be a mapping with a 'keys' list")
    for name in sorted(set(document) - set(TOP_LEVEL)):
        problems.append(f"unknown top-level field {name!r} (the file holds 'keys' only)")
    items = document.get("keys")
    if not isinstance(items, list):
        problems.append("'keys' must be a list of key entries ([[keys]] tables in TOML)")
        items = []
    entries: list[Entry] = []
    inline = False
    for index, item in enumerate(items):
        entry = _entry(index, item, path.parent, problems)
        if isinstance(item, dict) and "material" in item:
            inline = True
        if entry is not None:
            entries.append(entry)
    _check_across(items, problems)
    if inline and mode & 0o077:
        problems.insert(0, readable_by_others(path, mode))
    if problems:
        lines = "\n  ".join(problems)
        raise SeedError(
            f"seed file {path}: {len(problems)} problem(s), nothing applied:\n  {lines}"
        )
    return Seed(path, tuple(entries))


def _parse(kind: str, raw: bytes, path: Path) -> Any:
    try:
        if kind == "toml":
            return tomllib.loads(raw.decode("utf-8"))
        return yaml.load(raw, Loader=_StrictLoader)
    except UnicodeDecodeError:
        raise SeedError(f"seed file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SeedError(f"seed file {path} is not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise SeedError(f"seed file {path} is not valid YAML: {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader refusing a field given twice in one mapping (it keeps the last)."""


def _mapping(loader: yaml.SafeLoader, node: Any, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the field {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _entry(index: int, item: Any, base: Path, problems: list[str]) -> Entry | None:
    """The checked entry ``keys[index]``, or None with its problems added to ``problems``."""
    if not isinstance(item, dict):
        problems.append(f"keys[{index}]: must be a mapping of fields (KeyId, KeySpec, ...)")
        return None
    where = _where(index, item)
    found: list[str] = []

    def fail(name: str, what: str) -> None:
        found.append(f"{where}: {name}: {what}")

    for name in item:
        if name not in _FIELD:
            fail(str(name), f"unknown field (the fields are {', '.join(_FIELD)})")
    values: dict[str, Any] = {}
    for f in FIELDS:
        if f.name not in item:
            if f.required:
                fail(f.name, "missing (a lower-case UUID, e.g. " + str(uuid.uuid4()) + ")")
            continue
        value = item[f.name]
        if not isinstance(value, f.kinds):
            kinds = " or ".join(_KIND_NAMES[k] for k in f.kinds)
            fail(f.name, f"must be {kinds}, not {type(value).__name__} {value!r}"[:200])
            continue
        values[f.name] = value

    key_id = values.get("KeyId")
    if key_id is not None and not _is_key_id(key_id):
        fail("KeyId", "not a lower-case UUID (e.g. " + str(uuid.uuid4()) + ")")
    account = values.get("account_id")
    if account is not None and not _ACCOUNT.match(account):
        fail("account_id", "must be 12 digits (quote it in YAML, so it stays a string)")
    spec = _spec(values.get("KeySpec", KeySpec.SYMMETRIC_DEFAULT.value), fail)
    usage = _usage(spec, values.get("KeyUsage"), fail)
    tags = _tags(values.get("Tags"), fail)
    policy_text = _policy(values.get("Policy"), fail)
    aliases = _aliases(values.get("Aliases"), fail)
    description = values.get("Description")
    if spec is not None and usage is not None:
        params: dict[str, Any] = {"KeySpec": spec.value, "KeyUsage": usage.value}
        if description is not None:
            params["Description"] = description
        if tags:
            params["Tags"] = [{"TagKey": k, "TagValue": v} for k, v in tags.items()]
        _model_check("CreateKey", params, "KeySpec/KeyUsage/Description/Tags", fail)
    material = read_material(values, spec, base, fail)
    problems.extend(found)
    if found:
        return None
    assert key_id is not None and spec is not None and usage is not None
    return Entry(
        index, key_id, spec, usage, account, description, tags, policy_text, aliases, material
    )


def _is_key_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _spec(value: str, fail: Callable[[str, str], None]) -> KeySpec | None:
    try:
        spec = KeySpec(value)
    except ValueError:
        fail("KeySpec", f"{value!r} is not a KeySpec (one of {', '.join(KeySpec)})")
        return None
    if spec.china_only:
        fail("KeySpec", f"{spec} is offered by AWS only in its China Regions")
        return None
    if spec in pq.UNSUPPORTED:
        fail("KeySpec", pq.UNSUPPORTED[spec])
        return None
    return spec


def _usage(
    spec: KeySpec | None, value: str | None, fail: Callable[[str, str], None]
) -> KeyUsage | None:
    if spec is None:
        return None
    if value is None:
        return spec.default_usage
    try:
        usage = KeyUsage(value)
    except ValueError:
        fail("KeyUsage", f"{value!r} is not a KeyUsage (one of {', '.join(KeyUsage)})")
        return None
    if usage not in spec.usages:
        fail("KeyUsage", f"{usage} is not allowed with {spec} (allowed: {', '.join(spec.usages)})")
        return None
    return usage


def _tags(value: dict[Any, Any] | None, fail: Callable[[str, str], None]) -> dict[str, str] | None:
    if value is None:
        return None
    from hsmkms.service.tags import validate_tags

    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        fail("Tags", f"keys and values must be strings (quote them in YAML): {bad[0]!r}")
        return None
    try:
        return validate_tags([{"TagKey": k, "TagValue": v} for k, v in value.items()])
    except errors.KMSError as exc:
        fail("Tags", exc.message)
        return None


def _policy(value: str | dict[str, Any] | None, fail: Callable[[str, str], None]) -> str | None:
    if value is None:
        return None
    from hsmkms.service import policy

    try:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=_day)
    except TypeError as exc:
        fail("Policy", f"the mapping does not make a JSON document: {exc}")
        return None
    try:
        policy.parse_policy(text)
    except errors.KMSError as exc:
        fail("Policy", exc.message)
        return None
    return text


def _day(value: Any) -> str:
    """A date in a policy mapping as its text: YAML reads ``Version: 2012-10-17`` as a date."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _aliases(value: list[Any] | None, fail: Callable[[str, str], None]) -> tuple[str, ...] | None:
    if value is None:
        return None
    from hsmkms.service.aliases import check_alias_name

    names: list[str] = []
    for name in value:
        if not isinstance(name, str):
            fail("Aliases", f"{name!r} is not a string")
            continue
        try:
            check_alias_name(name)
        except errors.KMSError as exc:
            fail("Aliases", exc.message)
            continue
        if name in names:
            fail("Aliases", f"{name} is listed twice")
            continue
        if _model_check("CreateAlias", {"AliasName": name, "TargetKeyId": "x"}, "Aliases", fail):
            names.append(name)
    return tuple(names)


def _model_check(
    operation: str, params: dict[str, Any], name: str, fail: Callable[[str, str], None]
) -> bool:
    """Whether ``params`` pass botocore's model of ``operation`` (lengths, patterns)."""
    try:
        model.validate_input(operation, dict(params))
    except errors.KMSError as exc:
        fail(name, exc.message)
        return False
    return True


def _check_across(items: list[Any], problems: list[str]) -> None:
    """What no entry shows alone: a KeyId, or an alias in one account, given twice (read from
    every entry, valid or not, so that one bad entry hides no other problem)."""
    ids: dict[str, str] = {}
    aliases: dict[tuple[Any, str], str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        where = _where(index, item)
        key_id = item.get("KeyId")
        if isinstance(key_id, str):
            if key_id in ids:
                problems.append(f"{where}: KeyId: also the KeyId of {ids[key_id]}")
            ids.setdefault(key_id, where)
        names = item.get("Aliases")
        for name in names if isinstance(names, list) else ():
            if not isinstance(name, str):
                continue
            other = aliases.setdefault((item.get("account_id"), name), where)
            if other != where:
                problems.append(f"{where}: Aliases: {name} is also an alias of {other}")


def _where(index: int, item: dict[Any, Any]) -> str:
    """How problems name the entry ``keys[index]``: its index and its KeyId."""
    key_id = item.get("KeyId")
    return (
        f"keys[{index}] (KeyId {key_id})"
        if isinstance(key_id, str)
        else f"keys[{index}] (no KeyId)"
    )
