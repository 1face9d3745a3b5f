"""The audit trail (DESIGN decision 11, docs/audit.md): one CloudTrail-shaped JSON event per
request the operation layer answers, allowed or refused, hash-chained line to line.

One idea a module, and this package imports none of them, so that ``hsmkms audit verify``
loads only the chain:

* :mod:`~hsmkms.audit.events` — the event of one request: CloudTrail's KMS fields, botocore's
  model deciding which members are secrets (every blob, every member marked sensitive).
* :mod:`~hsmkms.audit.chain` — the line format (each line's hash covers the line and the
  previous line's hash) and its verification.
* :mod:`~hsmkms.audit.sinks` — the sink :class:`hsmkms.service.Service` is handed: a JSON-lines
  file (rotated by size, shared by every process of a home under one lock) and stdout, and the
  ``audit_required`` policy (refuse with a 5xx when no device can write, as Vault does).
"""
