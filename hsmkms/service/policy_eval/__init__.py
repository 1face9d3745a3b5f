"""Key policy documents and their evaluation, as AWS documents them: pure, no store, no HTTP.

A request is described by a :class:`RequestContext` (action, caller, key, encryption context,
...); a key policy is parsed once into immutable :class:`Statement` records; :func:`evaluate`
answers AWS's three-way decision:

* an explicit ``Deny`` in a matching statement wins (:attr:`Decision.DENY`);
* else an ``Allow`` in a matching statement allows (:attr:`Decision.ALLOW`);
* else nothing allows: the implicit deny (:attr:`Decision.NO_MATCH`), which a grant may still
  turn into an allow (the caller, :mod:`hsmkms.service.policy`, decides that).

What is copied from AWS (IAM JSON policy reference, "Policy evaluation logic", "Condition
operators", "Single-valued vs. multivalued context keys", and the KMS developer guide's
"Condition keys for AWS KMS"):

* ``Principal``/``NotPrincipal``: ``"*"``, ``{"AWS": ...}`` with ARNs or account ids. An account
  (``111122223333`` or ``arn:aws:iam::111122223333:root``) names every principal of that account:
  hsmkms has no IAM, so the default key policy's "let the account's IAM policies decide" means
  "the account's principals may". A role ARN also names that role's assumed-role sessions.
  ``Service``/``Federated``/``CanonicalUser`` principals never match a caller here. A Deny's
  ``NotPrincipal`` exempts a caller only when it names every identity of the caller (account,
  role of a session, user or session: :func:`not_principal_exempts`); an Allow with
  ``NotPrincipal`` is refused in new policies (:func:`check_new`) and never applies.
* ``Action``/``NotAction`` with ``*`` and ``?`` wildcards, case-insensitive.
* ``Resource``/``NotResource``: ``"*"`` or the key ARN (wildcards allowed, case-sensitive).
  A statement without ``Action`` or without ``Resource`` is accepted and has no effect, as
  KMS documents for CreateKey and PutKeyPolicy.
* Conditions: every operator and every key of a ``Condition`` block must hold; the values of
  one key are alternatives (OR), or for a negated operator (``StringNotEquals``...) all must
  fail (NOR). A key missing from the request fails the condition, except under a negated
  operator, an ``...IfExists`` operator, ``Null``, or ``ForAllValues:`` (which holds for an
  empty or missing set); ``ForAnyValue:`` fails on a missing set.
* Condition key names are case-insensitive, including the ``<key>`` of
  ``kms:EncryptionContext:<key>``; values are compared case-sensitively unless the operator
  says ``IgnoreCase``.

The package, one idea a module: :mod:`~hsmkms.service.policy_eval.request` (what a policy
sees of a request), :mod:`~hsmkms.service.policy_eval.condition_keys` (which keys are filled,
absent by AWS's rules, or refused), :mod:`~hsmkms.service.policy_eval.document` (the parsed
policy), :mod:`~hsmkms.service.policy_eval.decision` (the evaluation),
:mod:`~hsmkms.service.policy_eval.operators` (the condition operators and wildcards, matched
in linear time) and :mod:`~hsmkms.service.policy_eval.budget` (the bound on one evaluation's
work).
"""

from __future__ import annotations

from hsmkms.service.policy_eval.decision import (
    Decision,
    condition_holds,
    evaluate,
    not_principal_exempts,
    principal_names,
    principals_match,
    statement_applies,
)
from hsmkms.service.policy_eval.document import (
    INVALID_PRINCIPALS,
    PRINCIPAL_ARN,
    VERSIONS,
    Condition,
    Policy,
    PolicyError,
    Principals,
    Statement,
    check_new,
    parse,
)
from hsmkms.service.policy_eval.request import MULTIVALUED_KEYS, RequestContext

__all__ = [
    "INVALID_PRINCIPALS",
    "MULTIVALUED_KEYS",
    "PRINCIPAL_ARN",
    "VERSIONS",
    "Condition",
    "Decision",
    "Policy",
    "PolicyError",
    "Principals",
    "RequestContext",
    "Statement",
    "check_new",
    "condition_holds",
    "evaluate",
    "not_principal_exempts",
    "parse",
    "principal_names",
    "principals_match",
    "statement_applies",
]
