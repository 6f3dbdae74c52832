"""What a failed attempt means and whether to try again: the retry plan, without I/O.

Every failure of an attempt falls into one class (``Failure``), from the reply the node gave or
the exception redis-py raised:

| failure     | from                                        | applied?                      |
|-------------|---------------------------------------------|-------------------------------|
| NOT_LEADER  | ``-NOTLEADER id host:port``                 | nothing                       |
| TRY_AGAIN   | ``-TRYAGAIN ...`` (no leader, switchover, member behind) | nothing                 |
| NO_QUORUM   | ``-NOQUORUM ...``                           | nothing                       |
| IN_DOUBT    | ``-INDOUBT ...``                            | unknown                       |
| UNREACHABLE | ConnectionError, TimeoutError               | unknown once sent             |
| DEFINITE    | ``-ERR``, ``-WRONGTYPE``, auth errors, ...  | nothing: the caller's mistake |

``should_retry`` decides: definite answers go to the caller at once; the ones that guarantee
nothing was applied are always retried; an unknown outcome (``-INDOUBT``, or a connection that
dropped after the request may have left) is retried only when a second application cannot
hurt — a read, or a write carrying a request id (``CHORUS.ONCE``). Not an idempotent write
without one: a SET or DEL applied a second time, after another client's write, undoes that
write (the chaos run with session clients caught a retried DEL erasing an acknowledged SET).
Such a write raises instead, unless the client sends ids on every write (``request_ids="all"``).
An ``OTHER`` command (``CHORUS.SWITCHOVER``, ``CHORUS.DIVERGENT REAPPLY``, ...) whose request may
have left is never sent again.

Retries wait ``backoff_ms(attempt)``: exponential from ``backoff_ms_first`` to ``backoff_ms_max``
with "equal jitter" (a random half on top of a fixed half, from an injected ``random.Random``),
so clients that failed together do not come back together, and a call never waits less than
half its step.
"""

from __future__ import annotations

import enum
import random

from redis.exceptions import (AuthenticationError, ConnectionError, ResponseError, TimeoutError,
                              TryAgainError)

from chorusdb.client.commands import Kind

backoff_ms_first = 10
backoff_ms_max = 500


class Failure(enum.Enum):
    NOT_LEADER = "NOTLEADER"
    TRY_AGAIN = "TRYAGAIN"
    NO_QUORUM = "NOQUORUM"
    IN_DOUBT = "INDOUBT"
    UNREACHABLE = "unreachable"
    DEFINITE = "definite"


_CODES = {failure.value: failure for failure in
          (Failure.NOT_LEADER, Failure.TRY_AGAIN, Failure.NO_QUORUM, Failure.IN_DOUBT)}


def error_code(error: ResponseError) -> str:
    """The first word of an error reply. redis-py strips the code of the errors it knows
    (``-TRYAGAIN x`` becomes ``TryAgainError("x", status_code="TRYAGAIN")``) and keeps it in the
    message of the others (``ResponseError("NOTLEADER n1 ...")``); older redis-py versions keep
    no ``status_code``, so there only the class tells a stripped one apart."""
    if isinstance(error, TryAgainError):
        return Failure.TRY_AGAIN.value
    status_code = getattr(error, "status_code", None)
    if status_code:
        return status_code
    text = str(error.args[0]) if error.args else ""
    return text.split(" ", 1)[0]


def classify(error: Exception) -> Failure:
    if isinstance(error, AuthenticationError):      # a ConnectionError, but a definite one
        return Failure.DEFINITE
    if isinstance(error, (ConnectionError, TimeoutError)):
        return Failure.UNREACHABLE
    if isinstance(error, ResponseError):
        return _CODES.get(error_code(error), Failure.DEFINITE)
    return Failure.DEFINITE


def should_retry(failure: Failure, kind: Kind, has_request_id: bool, sent: bool) -> bool:
    """Whether an attempt that failed so may be made again (module docstring). ``sent``: the
    request may have reached the node (False when connecting failed)."""
    if failure is Failure.DEFINITE:
        return False
    if failure in (Failure.NOT_LEADER, Failure.TRY_AGAIN, Failure.NO_QUORUM) or not sent:
        return True
    assert failure in (Failure.IN_DOUBT, Failure.UNREACHABLE), failure
    return kind is Kind.READ or (kind is Kind.WRITE and has_request_id)


def backoff_ms(attempt: int, rng: random.Random) -> int:
    """The pause before retry number ``attempt`` (1 = the first retry)."""
    assert attempt >= 1, attempt
    step = min(backoff_ms_max, backoff_ms_first << min(attempt - 1, backoff_ms_max.bit_length()))
    return step // 2 + rng.randint(0, step - step // 2)
