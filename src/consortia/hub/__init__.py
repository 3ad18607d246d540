"""The hub: an HTTP(S) server that coordinates studies over enrolled nodes.

Programmatic use::

    from consortia.hub import HubProcess, HubSettings, create_app, serve

* :func:`create_app` builds the FastAPI application for :class:`HubSettings`;
* :func:`serve` runs it with uvicorn (``consortia hub start`` on the command line);
* :class:`HubProcess` starts one as a child process (demo, benchmarks, tests).

The names are imported on first use: ``consortia.hub.settings`` (the defaults, read by
the command line) loads without the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consortia.hub.app import bootstrap_token, create_app
    from consortia.hub.process import HubProcess, free_port
    from consortia.hub.server import serve
    from consortia.hub.settings import HubSettings

__all__ = ["HubProcess", "HubSettings", "bootstrap_token", "create_app", "free_port", "serve"]

_HOME = {
    "HubProcess": "consortia.hub.process",
    "HubSettings": "consortia.hub.settings",
    "bootstrap_token": "consortia.hub.app",
    "create_app": "consortia.hub.app",
    "free_port": "consortia.hub.process",
    "serve": "consortia.hub.server",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
