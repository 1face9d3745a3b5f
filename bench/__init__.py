"""``scripts/bench``: hsmkms side by side with moto's server under one load generator.

Not part of the installed package (pyproject.toml packages ``hsmkms*`` only): run from the
repository's root, ``python -m bench`` (what scripts/bench does). The tests import two modules
from here as well, the server launcher (:mod:`bench.servers`) and the fast SigV4 signer
(:mod:`bench.signer`), so that both live once. It imports nothing outside the standard library
and hsmkms's own dependencies until it runs (moto is a separate server process, installed by
the bench extra); psutil comes with the test and bench extras.
"""
