"""The hash chain of the audit file, and its verification (``hsmkms audit verify``).

One event is one line: the event's JSON object whose last member is ``hsmkmsChain`` (one line
in the file; folded here)::

    {"eventVersion":"1.08", ...,
     "hsmkmsChain":{"alg":"sha256","seq":7,"prev":"<64 hex>","hash":"<64 hex>"}}

``seq`` counts the events of the chain from 1; ``prev`` is the ``hash`` of the event before
(64 zeros before the first); ``hash`` is SHA-256 (or HMAC-SHA-256 under the key of the
``audit_key_file`` setting: ``"alg":"hmac-sha256"``) of the line's bytes up to and including
``prev``'s closing quote. So the hash covers the whole event and, through ``prev``, every event
before it: an edited line no longer matches its own hash, a deleted line leaves a gap in
``seq`` and a ``prev`` that names no line, a reordered line both. Rotated files continue the
chain (the first event of a new file names the last of the one before).

A plain hash chain proves nothing against someone who can rewrite the whole file: they can
recompute every hash after their edit. The HMAC key (a 0600 file the writer and the verifier
read, the editor not) closes that; neither closes the cutting of the last lines, which only a
copy of the last hash kept elsewhere detects (``verify`` prints it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

GENESIS = "0" * 64
CHAIN_MEMBER = b',"hsmkmsChain":'
_HASH_OPEN = b',"hash":"'
_HASH_CLOSE = b'"}}'
# The bytes after a line's hashed body: ,"hash":"<64 hex>"}}
SUFFIX = len(_HASH_OPEN) + 64 + len(_HASH_CLOSE)
PLAIN, KEYED = "sha256", "hmac-sha256"


class Chain:
    """Where a chain stands (the last event's ``seq`` and ``hash``), and how it hashes."""

    def __init__(self, key: bytes | None = None, seq: int = 0, last: str = GENESIS) -> None:
        self.key = key
        self.alg = KEYED if key else PLAIN
        self.seq = seq
        self.last = last

    def digest(self, body: bytes) -> str:
        if self.key is not None:
            return hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return hashlib.sha256(body).hexdigest()

    def line(self, event_json: bytes) -> tuple[bytes, int, str]:
        """The line (newline included) that chains ``event_json`` (a JSON object) after the
        last event, and the (seq, hash) it gives; the chain itself moves on :meth:`advance`."""
        seq = self.seq + 1
        head = f',"hsmkmsChain":{{"alg":"{self.alg}","seq":{seq},"prev":"{self.last}"'
        body = event_json[:-1] + head.encode()
        digest = self.digest(body)
        return body + _HASH_OPEN + digest.encode() + _HASH_CLOSE + b"\n", seq, digest

    def advance(self, seq: int, digest: str) -> None:
        self.seq, self.last = seq, digest


@dataclass(frozen=True)
class Link:
    """What one line says of itself: its seq, prev and hash, and the bytes its hash covers."""

    seq: int
    prev: str
    hash: str
    alg: str
    body: bytes


def parse(line: bytes) -> Link | None:
    """The chain member of one line (without its newline), None if it has none."""
    if len(line) <= SUFFIX or not line.endswith(_HASH_CLOSE):
        return None
    if line[-SUFFIX : -SUFFIX + len(_HASH_OPEN)] != _HASH_OPEN:
        return None
    at = line.rfind(CHAIN_MEMBER)
    if at < 0:
        return None
    try:
        chain = json.loads(line[at + len(CHAIN_MEMBER) : -1])
        seq, prev, digest, alg = chain["seq"], chain["prev"], chain["hash"], chain["alg"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(seq, int) and isinstance(prev, str) and isinstance(digest, str)):
        return None
    return Link(seq, prev, digest, str(alg), line[:-SUFFIX])


def last_line(fd: int, size: int) -> tuple[bytes | None, bool]:
    """The last complete line of the file open at ``fd`` (``size`` bytes), and whether the
    file ends in a partial line (a write cut short: the next line must start on a new one)."""
    if size <= 0:
        return None, False
    window = 8192
    while True:
        start = max(0, size - window)
        data = os.pread(fd, size - start, start)
        partial = not data.endswith(b"\n")
        end = data.rfind(b"\n")
        if end < 0:
            if start == 0:
                return None, partial
            window *= 4
            continue
        begin = data.rfind(b"\n", 0, end) + 1
        if begin == 0 and start > 0:
            window *= 4
            continue
        return data[begin:end], partial


# -- verification -----------------------------------------------------------------------------
@dataclass
class Report:
    """The outcome of :func:`verify`: events read, breaks found (one line each), the end."""

    events: int = 0
    files: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    breaks: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def lines(self) -> list[str]:
        out = [f"skipped {name}: not an hsmkms audit file" for name in self.skipped]
        out += self.breaks
        if self.ok:
            span = f"seq {self.first_seq} to {self.last_seq}" if self.events else "no events"
            out.append(
                f"OK: {self.events} events in {self.files} file(s), {span}, the chain is intact; "
                f"last hash {self.last_hash} (keep it elsewhere: a cut-off end is only "
                "detected against it)"
            )
        else:
            out.append(f"BROKEN: {len(self.breaks)} break(s) in {self.events} events")
        return out


def audit_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The files to verify, in chain order: each FILE given, and each file of a DIRECTORY
    given (its lock files aside) whose first line is an audit event; ordered by the seq of
    their first event (rotated files sort before the live one). Also the names skipped."""
    found: list[tuple[int, str, Path]] = []
    skipped: list[str] = []
    for path in paths:
        listed = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for item in listed:
            if item.name.endswith(".lock"):
                continue
            first = _first_link(item)
            if first is None:
                if path.is_dir() and item.stat().st_size:
                    skipped.append(str(item))
                elif not path.is_dir():
                    found.append((0, str(item), item))  # verify says what is wrong with it
                continue
            found.append((first.seq, str(item), item))
    found.sort(key=lambda f: (f[0], f[1]))
    return [p for _, _, p in found], skipped


def _first_link(path: Path) -> Link | None:
    try:
        with open(path, "rb") as fh:
            return parse(fh.readline().rstrip(b"\n"))
    except OSError:
        return None


def verify(files: list[Path], key: bytes | None = None, partial: bool = False) -> Report:
    """Check the chain across ``files`` in order. ``partial``: the first event may continue a
    chain whose earlier files are gone (retention); otherwise the chain must start at seq 1."""
    report = Report()
    chain = Chain(key)
    expected_prev: str | None = None if partial else GENESIS
    expected_seq: int | None = None if partial else 1
    other_alg = at_alg = 0  # events in a row chained with the other algorithm: one report
    for path in files:
        report.files += 1
        for number, raw, complete in _lines(path):
            where = f"{path}:{number}"
            if not complete:
                report.breaks.append(f"{where}: the last line is cut short (a crash mid-write?)")
                continue
            link = parse(raw)
            if link is None or not _is_json(raw):
                # The lines after it are still checked against the last sound one (a writer
                # that found a line it cannot read starts a new chain: reported as such).
                report.breaks.append(f"{where}: not an hsmkms audit event (edited or foreign)")
                continue
            report.events += 1
            if report.first_seq is None:
                report.first_seq = link.seq
            if link.alg != chain.alg:
                if not other_alg:
                    at_alg = len(report.breaks)
                    report.breaks.append(
                        f"{where}: seq {link.seq} is chained with {link.alg}, not {chain.alg}"
                        + (": give the key (--key-file)" if link.alg == KEYED else "")
                    )
                other_alg += 1
            elif not hmac.compare_digest(chain.digest(link.body), link.hash):
                report.breaks.append(
                    f"{where}: seq {link.seq} was changed after it was written (its hash does "
                    "not match its content)"
                )
            elif expected_prev is not None and link.prev != expected_prev:
                report.breaks.append(_gap(where, link, expected_seq))
            elif expected_seq is not None and link.seq != expected_seq:
                report.breaks.append(f"{where}: seq {link.seq} where {expected_seq} was expected")
            if link.alg == chain.alg:
                _so_are(report, at_alg, other_alg)
                other_alg = 0
            expected_prev, expected_seq = link.hash, link.seq + 1
            report.last_seq, report.last_hash = link.seq, link.hash
    _so_are(report, at_alg, other_alg)
    return report


def _so_are(report: Report, at: int, run: int) -> None:
    if run > 1:
        report.breaks[at] += f"; so are the {run - 1} events after it"


def _gap(where: str, link: Link, expected_seq: int | None) -> str:
    if link.prev == GENESIS:
        return f"{where}: a new chain starts here (seq {link.seq}): what came before is cut off"
    if expected_seq is not None and link.seq > expected_seq:
        missing = (
            f"seq {expected_seq}"
            if link.seq == expected_seq + 1
            else f"seq {expected_seq} to {link.seq - 1}"
        )
        return f"{where}: {missing} is missing before seq {link.seq} (deleted)"
    if expected_seq is not None and link.seq < expected_seq:
        return f"{where}: seq {link.seq} comes after seq {expected_seq - 1} (reordered or repeated)"
    return f"{where}: seq {link.seq} does not follow the line before it (that one was replaced)"


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            complete = raw.endswith(b"\n")
            yield number, raw.rstrip(b"\n"), complete


def _is_json(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False
