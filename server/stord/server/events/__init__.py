"""The event store contract (DESIGN 4.4): hash-chained agent events, derived sessions and agents, analytics.

Modules:
- `port`: the EventStore Protocol and its domain types (re-exported by stord.server.ports);
- `service`: EventStoreServicer, the gRPC front (validate, translate, map errors);
- `codec`: messages <-> domain values; `chain`: canonical JSON, hashes and chain checks; `model`: the rules
  of derived sessions, agents, filters and analytics buckets;
- `ingest`: how a batch is stored, written once over the primitives each backend supplies
  (`IngestTransaction`, `AsyncIngestTransaction`);
- `tail`: TailEvents subscriptions fed from the store's feed; `retention`: the daily retention pass.

Nothing is imported here: stord.server.ports imports `port`, and the other modules import stord.server.ports.
"""

__all__ = ["chain", "codec", "ingest", "model", "port", "retention", "service", "tail"]
