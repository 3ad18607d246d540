"""The hub: an HTTP(S) server that coordinates studies over enrolled nodes.

Programmatic use::

    from consortia.hub import HubProcess, HubSettings, create_app, serve

* :func:`create_app` builds the FastAPI application for :class:`HubSettings`;
* :func:`serve` runs it with uvicorn (``consortia hub start`` on the command line);
* :class:`HubProcess` starts one as a child process (demo, benchmarks, tests).
"""

from consortia.hub.app import HubSettings, bootstrap_token, create_app
from consortia.hub.process import HubProcess, free_port
from consortia.hub.server import serve

__all__ = ["HubProcess", "HubSettings", "bootstrap_token", "create_app", "free_port", "serve"]
