"""The offboard's starter: `start_offboard` checks the request, asks the server its fee
schedule and limits, and returns the action with the VTXOs it holds from its first checkpoint
(`started.Started`). Nothing is written here.
"""

from __future__ import annotations

import secrets

from .model import change_pieces, vtxo_resource
from .offboard import OffboardKind
from .offboard_model import Offboard, SendOnchain
from .services import Services
from .started import Started


class OffboardError(ValueError):
    """The offboard cannot start (checked before anything is held or asked)."""


async def start_offboard(
    services: Services,
    destination: str,
    *,
    vtxo_ids: list[str] | None = None,
    amount: int | None = None,
    offboard_id: str | None = None,
) -> Started[Offboard]:
    """A new offboard to ``destination`` and the VTXOs it holds from its first checkpoint.

    With ``amount``: SendOnchain, pay exactly ``amount``; the offboard spends one split VTXO,
    so the fee is that of a one-input offboard. Else OffboardWhole: forfeit ``vtxo_ids`` (by
    default every spendable VTXO not in use, bark's ``offboard_all``), the fee deducted from
    their total. The id is ``offboard_id`` if given (a caller that must be reproducible, such
    as the demo), else 16 random bytes, lowercase hex (bark's offboard ids).
    """
    offboard_id = offboard_id or secrets.token_hex(16)
    if amount is not None:
        if vtxo_ids is not None:
            raise OffboardError("give the VTXOs to offboard or the amount to send, not both")
        return await _send_onchain(services, offboard_id, destination, amount)
    if vtxo_ids is None:
        vtxo_ids = [v.id for v in services.wallet.spendable_vtxos()]
    return await _offboard_whole(services, offboard_id, destination, vtxo_ids)


async def _offboard_whole(
    services: Services, offboard_id: str, destination: str, vtxo_ids: list[str]
) -> Started[Offboard]:
    if len(set(vtxo_ids)) != len(vtxo_ids) or not vtxo_ids:
        raise OffboardError("offboard needs distinct inputs")
    info = await services.server.info()
    if len(vtxo_ids) > info.max_offboard_inputs:
        raise OffboardError(f"{len(vtxo_ids)} inputs, at most {info.max_offboard_inputs}")
    free = {v.id: v for v in services.wallet.spendable_vtxos()}
    missing_ids = [vid for vid in vtxo_ids if vid not in free]
    if missing_ids:
        raise OffboardError(f"not spendable or in use: {', '.join(missing_ids)}")
    total = sum(free[vid].amount for vid in vtxo_ids)
    fee = info.offboard_fee(len(vtxo_ids))
    if total - fee < info.dust_limit:
        raise OffboardError(f"{total} sats minus fee {fee} is dust")
    data = Offboard(
        offboard_id,
        destination,
        total - fee,
        fee,
        info.offboard_fee_rate,
        sorted(vtxo_ids),
    )
    return Started(OffboardKind.create(data), [vtxo_resource(vid) for vid in data.input_vtxo_ids])


async def _send_onchain(
    services: Services, offboard_id: str, destination: str, amount: int
) -> Started[Offboard]:
    info = await services.server.info()
    if amount < info.dust_limit:
        raise OffboardError(f"{amount} sats is dust (limit {info.dust_limit})")
    fee = info.offboard_fee(1)
    tip = await services.chain.tip_height()
    inputs = services.wallet.select_coins(
        amount + fee, max_depth=info.max_arkoor_depth, tip=tip
    )  # the split is an arkoor spend: bark skips depth-limited VTXOs
    if len(inputs) > info.max_offboard_inputs:
        raise OffboardError(f"{len(inputs)} inputs needed, at most {info.max_offboard_inputs}")
    change = sum(v.amount for v in inputs) - amount - fee
    split = SendOnchain(
        services.wallet.next_key_index(),
        services.wallet.next_key_index(),
        change_pieces(change, amount, services.config.change_vtxo_split_factor),
    )
    ids = sorted(v.id for v in inputs)
    data = Offboard(offboard_id, destination, amount, fee, info.offboard_fee_rate, ids, split)
    return Started(OffboardKind.create(data), [vtxo_resource(vid) for vid in ids])


__all__ = ["OffboardError", "start_offboard"]
