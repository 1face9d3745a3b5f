"""``scripts/bench``: hsmkms side by side with moto's server under one load generator.

A package rather than a script so that the unit tests import its SigV4 signer and mypy checks
it with the rest; it imports nothing outside the standard library and hsmkms's own
dependencies until it runs (moto is a separate server process, installed by the bench extra).
"""
