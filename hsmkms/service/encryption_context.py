"""The size limit of an encryption context (issue 13, item 1).

AWS KMS documents 8,192 bytes for a whole encryption context; hsmkms counts its keys and
values in UTF-8 and answers ValidationException beyond that, before anything (the key policy,
the grants, the token) reads it. Besides matching AWS, the limit bounds what a caller can make
a key policy's wildcards match against (:mod:`hsmkms.service.policy_eval.budget` bounds the
rest).
"""

from __future__ import annotations

from collections.abc import Mapping

from hsmkms import errors

MAX_BYTES = 8192


def size(context: Mapping[str, str]) -> int:
    """The encryption context's keys and values, in UTF-8 bytes (lone surrogates count as
    the three bytes they would take)."""
    return sum(
        len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
        for k, v in context.items()
    )


def checked(context: dict[str, str] | None, member: str) -> dict[str, str] | None:
    """``context`` (the request member ``member``), or ValidationException if over the limit."""
    if context:
        n = size(context)
        if n > MAX_BYTES:
            raise errors.ValidationException(
                f"{member} is {n} bytes: an encryption context holds at most {MAX_BYTES} bytes "
                "of keys and values (UTF-8)."
            )
    return context
