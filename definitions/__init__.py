"""The bark wallet action kinds, written with fsm, and the services they talk to.

`definitions.model` holds the plain records (VTXOs, transactions, invoices, movements),
`definitions.services` the typed protocols of the outside world (Ark server, chain, Lightning,
the wallet's own store) and `definitions.sim` a deterministic, SQLite-backed simulation of
that world with fault injection, an effect ledger and invariant checks.
"""
