-- Agent registry and manifest store (DESIGN 4.5, 4.6). Text compares with BINARY collation, which orders
-- UTF-8 text by code point, as on every other backend.

-- `position` (the rowid) gives the insertion order searches page in: a new row gets one more than the
-- greatest position, so an agent deleted and stored again goes last, and an upsert keeps its row, hence its
-- position. (Without AUTOINCREMENT the position of the last agent can come back after it is deleted, which
-- only matters to a search already past it: agents stored while paging may or may not appear.)
-- `name_folded` and `configuration_folded` are the case-folded texts searches look into (folded in Python,
-- see backends/_agent_search.py); `configuration` is the JSON object, NULL when the agent has none.
CREATE TABLE agents (
    position             INTEGER PRIMARY KEY,
    namespace            TEXT NOT NULL,
    uri                  TEXT NOT NULL,
    name                 TEXT NOT NULL,
    version              TEXT NOT NULL,
    status               TEXT NOT NULL,
    visibility           TEXT NOT NULL,
    owner                TEXT NOT NULL,      -- '' when unowned
    configuration        TEXT,
    update_time          REAL NOT NULL,      -- seconds since the epoch
    name_folded          TEXT NOT NULL,
    configuration_folded TEXT NOT NULL,
    UNIQUE (namespace, uri)
);

-- A search page reads the namespace in position order and stops at the page size.
CREATE INDEX agents_in_order ON agents (namespace, position);

-- Every version of each handler's manifest. The latest is the greatest (created_seconds, created_nanos,
-- version); the document is the rest of the manifest as JSON.
CREATE TABLE handler_manifests (
    namespace       TEXT NOT NULL,
    handler_id      TEXT NOT NULL,
    version         TEXT NOT NULL,
    created_seconds INTEGER NOT NULL,
    created_nanos   INTEGER NOT NULL,
    document        TEXT NOT NULL,
    PRIMARY KEY (namespace, handler_id, version)
) WITHOUT ROWID;

CREATE INDEX handler_manifests_by_time
    ON handler_manifests (namespace, handler_id, created_seconds, created_nanos, version);

CREATE TABLE manifest_transformers (
    namespace    TEXT NOT NULL,
    id           TEXT NOT NULL,
    handler_id   TEXT NOT NULL,
    from_version TEXT NOT NULL,
    to_version   TEXT NOT NULL,
    document     TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

CREATE INDEX manifest_transformers_by_versions
    ON manifest_transformers (namespace, handler_id, from_version, to_version, id);

-- Hook manifests, GTypes, version graphs and Timescape metadata: stored, read and listed by key only.
-- `version` is '' for the kinds keyed by one id.
CREATE TABLE manifest_documents (
    namespace TEXT NOT NULL,
    kind      TEXT NOT NULL,
    id        TEXT NOT NULL,
    version   TEXT NOT NULL,
    document  TEXT NOT NULL,
    PRIMARY KEY (namespace, kind, id, version)
) WITHOUT ROWID;
