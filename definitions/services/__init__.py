"""The typed services the wallet kinds talk to, derived from bark's wallet actions.

Each party is a `typing.Protocol` in a module of its own, so the kinds depend on the shape only
(`sim` implements all of them; a real wallet would wrap gRPC, bitcoind and its database):

* `ark_server`: `ArkServer`, every server RPC the five kinds call, its rejection codes and
  `ServerUnavailable`; `ark_records`: the records those RPCs take and return;
* `chain`: `ChainSource`, the bitcoin backend;
* `lightning_node`: `LightningNode`, the payee/payer on the Lightning side (used by demos and tests,
  not kinds), and `PaymentStatus`;
* `wallet`: `WalletStore` (the wallet's own database) and `OnchainWallet` (its on-chain coins).

The simulation mirrors these names: `sim.ark_server`, `sim.chain` and `sim.lightning_node`
implement the protocols of the modules of the same name here, `sim.wallet_store` the
`WalletStore`.

This module bundles them: `Services` is what a step sees as ``ctx.services``, with the
`WalletConfig` the kinds read and the `Clock`. Remote calls are ``async``; the wallet store
is local and synchronous.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from ..model import Network
from .ark_server import ArkServer
from .chain import ChainSource
from .lightning_node import LightningNode
from .wallet import OnchainWallet, WalletStore


class Clock(Protocol):
    def now(self) -> float:
        """Seconds (unix time); the sim's clock only moves when told to."""
        ...


@attrs.frozen
class WalletConfig:
    """The wallet settings bark's kinds read (defaults as in bark, non-mainnet)."""

    network: Network = Network.REGTEST
    offboard_required_confirmations: int = 0
    offboard_lost_tx_grace_period_secs: float = 3600.0
    vtxo_refresh_expiry_threshold: int = 12
    change_vtxo_split_factor: int = 2
    lightning_receive_claim_retries: int = 5
    vtxo_exit_margin: int = 12
    htlc_recv_claim_delta: int = 18


@attrs.frozen
class Services:
    """Everything a wallet kind's step may use (``ctx.services``)."""

    server: ArkServer
    chain: ChainSource
    lightning: LightningNode
    onchain: OnchainWallet
    wallet: WalletStore
    clock: Clock
    config: WalletConfig = attrs.Factory(WalletConfig)
