"""The hub's HTTP routes, grouped by who calls them.

Each module builds an :class:`fastapi.APIRouter` that
:func:`consortia.hub.app.create_app` includes into the hub's one FastAPI
application (one route table):

* :mod:`~consortia.hub.routes.auth`: bearer tokens to principals, and the role checks;
* :mod:`~consortia.hub.routes.service`: liveness, ``whoami`` and node enrolment;
* :mod:`~consortia.hub.routes.node`: a node's catalogue, tasks, payloads and posts;
* :mod:`~consortia.hub.routes.studies`: a researcher's catalogue and studies.
"""
