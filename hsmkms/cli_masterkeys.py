"""``hsmkms migrate --master-keys token|wrapped`` and ``hsmkms domain-key ...``: move a home
between the master-key modes, and rotate the wrapped mode's domain key."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """(filled in by the migration work)"""
