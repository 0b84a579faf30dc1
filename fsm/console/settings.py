"""What one console serves, and how: the database's URL, the kinds, the switches.

Plain data decided once by ``fsm console`` (or a test), read by every view. The token is
minted here, once per start: it is the secret every state-changing request must carry, and
it is printed by the command, never stored.
"""

from __future__ import annotations

import ipaddress
import secrets

import attrs

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback interface (only this machine reaches it)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh secret for the controls: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


@attrs.frozen
class Settings:
    """One console's settings.

    ``allow_control``: the controls are served (the store is then opened read-write), each
    request carrying ``token``. ``host``/``port``: where it listens (the port actually
    bound, once bound). ``poll``: seconds between two reads of a kind's counts by an open
    page. ``late``: seconds a claimable action may wait for a worker before its state is
    painted as late. ``page``: rows per listing page.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    allow_control: bool = False
    token: str = attrs.field(factory=new_token, repr=False)
    poll: float = 2.0
    late: float = 60.0
    page: int = 50

    @property
    def cookie(self) -> str:
        """The session cookie's name: one per port, since cookies ignore ports and two
        consoles on one host must not read each other's."""
        return f"fsm_console_{self.port}"

    @property
    def hosts(self) -> frozenset[str] | None:
        """The ``Host`` headers a request may carry (a page of another site resolving its
        own name to this address is refused: DNS rebinding); ``None`` when it listens on
        every interface, where any name may lead to it."""
        if self.host in WILDCARDS:
            return None
        names = {self.host, f"[{self.host}]"} if ":" in self.host else {self.host}
        if is_loopback(self.host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        return frozenset({*names, *(f"{name}:{self.port}" for name in names)})
