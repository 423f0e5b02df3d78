"""Documents: the DocumentService contract (JSON documents, filters, Transact).

`port` is the store Protocol, `service` the servicer, `fields` the request's field paths and JSON, `rules`
the typed comparison, sort order and merge every backend follows.
"""

__all__: list[str] = []
