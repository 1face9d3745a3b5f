"""``python -m hsmkms`` is the ``hsmkms`` command."""

from hsmkms.cli import main

raise SystemExit(main())
