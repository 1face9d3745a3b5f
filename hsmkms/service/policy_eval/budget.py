"""The bound on the work one policy evaluation may do (issue 13, item 1).

Evaluation runs on the event loop for data-plane calls, so its cost must not depend on what
a caller sends beyond a fixed bound. Every step of :func:`~hsmkms.service.policy_eval.evaluate`
(a statement, a principal, a wildcard candidate, a condition comparison, an encryption
context pair read) is charged to the :class:`Budget` of the evaluation in progress; one that
runs out raises :class:`EvaluationTooLong`, and the evaluator decides safely: a Deny it could
not finish applies, an Allow it could not finish does not.

The budget travels in a :class:`contextvars.ContextVar`, so it follows the evaluation on its
own thread or asyncio task and the matchers keep their two-argument signatures.
"""

from __future__ import annotations

from contextvars import ContextVar

# At most about 20 ms of the slowest steps (wildcard candidates, ~0.35 us each on one core);
# a large legitimate key policy (a hundred statements, conditions on a context of dozens of
# pairs) needs a few thousand; the patterns of issue 13 need a few dozen.
MAX_EVALUATION_STEPS = 50_000


class EvaluationTooLong(Exception):
    """One evaluation used up its steps: the evaluator decides without the rest."""


class Budget:
    """Steps left to one evaluation."""

    __slots__ = ("left",)

    def __init__(self, steps: int = MAX_EVALUATION_STEPS) -> None:
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise EvaluationTooLong


CURRENT: ContextVar[Budget | None] = ContextVar("hsmkms_policy_budget", default=None)


def spend(steps: int) -> None:
    """Charge ``steps`` to the evaluation in progress (none outside an evaluation)."""
    budget = CURRENT.get()
    if budget is not None:
        budget.spend(steps)
