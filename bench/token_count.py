"""The objects on an embedded home's SoftHSM2 token, counted without hsmkms's token layer:

    python -m bench.token_count HOME      # one JSON line

``listed``: every object a fresh logged-in session finds (python-pkcs11's C_FindObjects with
an empty template: the token objects, since the session has none of its own), by class;
``files``: SoftHSM2's object files in the token directory (``<uuid>.object``, one per token
object, token.object excluded). Run in a process of its own: the home's softhsm2.conf is
SoftHSM2's configuration only if it is set before the library loads."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def count(home: Path) -> dict[str, Any]:
    import pkcs11

    from hsmkms.config import default_pkcs11_module

    conf = home / "softhsm2.conf"
    os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
    tokendir = Path(home / "tokens")
    for line in conf.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "directories.tokendir":
            tokendir = Path(value.strip())
    files = sum(
        1 for p in tokendir.glob("*/*.object") if p.name != "token.object"
    )  # fmt: skip
    pin = (home / "user.pin").read_text().strip()
    lib = pkcs11.lib(default_pkcs11_module())
    token = lib.get_token(token_label="hsmkms")
    classes: Counter[str] = Counter()
    with token.open(user_pin=pin) as session:
        for obj in session.get_objects({}):
            classes[getattr(obj.object_class, "name", "?")] += 1
    return {"listed": sum(classes.values()), "by_class": dict(classes), "files": files}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(count(Path(args[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
