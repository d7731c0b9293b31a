"""The worker's HTTP endpoint: queries, ``/health`` and ``/metrics`` (docs/queries.md).

* :mod:`~statestream.web.routes`: what each path answers (JSON), from a
  :class:`~statestream.query.service.QueryService` and the worker's health;
* :mod:`~statestream.web.server`: the threading HTTP server of the standard
  library around them (bind address, bearer token, one thread per request).
"""

from statestream.web.routes import Reply, Routes
from statestream.web.server import WebServer

__all__ = ["Reply", "Routes", "WebServer"]
