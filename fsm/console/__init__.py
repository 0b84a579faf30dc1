"""``fsm console``: a web page to watch and operate live actions on their kinds' diagrams.

The optional extra ``fsm[console]`` (Starlette, uvicorn, Jinja2): ``import fsm`` never
imports it. Its rooms:

* `settings` (`Settings`: where it listens, the switches, the token) and `guard` (the Host
  check, the token, the cross-site checks);
* `backend` (`Backend`: the store on a thread of its own; the library's reads, controls and
  diagrams, nothing else);
* `app` (`create_app`: routes and headers), `web` (templates, forms), ``views/`` (one module
  per page), ``templates/`` and ``static/`` (the HTML, CSS and JavaScript, no CDN);
* `serve` (bind, announce, run uvicorn).
"""

from fsm.console.app import create_app
from fsm.console.backend import Backend
from fsm.console.settings import Settings, is_loopback

__all__ = ["Backend", "Settings", "create_app", "is_loopback"]
