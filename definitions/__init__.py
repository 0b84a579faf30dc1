"""The bark wallet action kinds, written with fsm, and the services they talk to.

Installed as the distribution ``fsm-bark`` (``pip install -e ./definitions``), whose import
package ``fsm_bark`` is this folder: every import in here is relative, so the folder's name and
the import name can differ. One module per kind (`board`, `offboard`, `arkoor_send`,
`lightning_send`, `lightning_receive`), each laid out alike: data class, ``<kind>_id`` where
the id is derived, steps, ``<Name>Kind``, and one starter ``start_<kind>(services, ...)``
returning a `started.Started` (in ``<kind>_start`` where the kind's module grew too long);
operations on live actions are in ``<kind>_ops``. `model` holds
the plain records (VTXOs, transactions, invoices, movements), `services` the typed protocols of
the outside world (Ark server, chain, Lightning, the wallet's own store) and `sim` a
deterministic, SQLite-backed simulation of that world with fault injection, an effect ledger
and invariant checks. `demo` and `torture` plug the kinds into the ``fsm demo`` command and
``fsm torture``.
"""
