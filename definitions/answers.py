"""What a kind checks in the server's answer before it believes it.

bark builds the VTXOs of an arkoor spend, an HTLC, a revocation or a claim from its own
request and only asks the server to sign them, so an answer that is not what it asked for
cannot pass as one. The sim has no signatures: a kind compares the VTXOs the server returns
with the requests it sent instead. A mismatch is transient (`AnswerMismatch`): the inputs
stay held (the server may have spent them) and the retry, under the same key, gets the
server's stored answer, which is the truth unless the server itself is wrong.
"""

from __future__ import annotations

from .model import Vtxo, VtxoRequest


class AnswerMismatch(Exception):
    """The server's answer is not what the request asked for (transient: retried)."""


def check_outputs(what: str, requested: list[VtxoRequest], got: list[Vtxo]) -> None:
    """The VTXOs ``got`` are ``requested``, in order: same amounts, same policies."""
    asked = [(r.amount, r.policy) for r in requested]
    answered = [(v.amount, v.policy) for v in got]
    if asked != answered:
        raise AnswerMismatch(f"{what}: the server returned {answered}, not {asked}")


__all__ = ["AnswerMismatch", "check_outputs"]
