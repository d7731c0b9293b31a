"""Queries: reads of a running worker's committed table state, from any thread.

* :mod:`~statestream.query.answers`: what a query returns;
* :mod:`~statestream.query.windows`: a windowed table's windows, read from its store;
* :mod:`~statestream.query.service`: :class:`QueryService`, which finds the
  copy of a key (active partition, standby copy, global table) and reads it.

``app.query(...)`` and the HTTP endpoint (:mod:`statestream.web`) are built on
the service. docs/queries.md describes them for users.
"""

from statestream.query.answers import Answer, Copy, Page
from statestream.query.service import QueryService, StoreSource

__all__ = ["Answer", "Copy", "Page", "QueryService", "StoreSource"]
