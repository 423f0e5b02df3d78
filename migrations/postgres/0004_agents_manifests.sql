-- Agent registry and manifest store (DESIGN 4.5, 4.6). COLLATE "C" orders identifiers by code point, as on
-- every other backend, whatever the database's locale.

-- `position` gives the insertion order searches page in: an upsert keeps its row, hence its position, and
-- an agent deleted and stored again draws a new, greater one.
-- `name_folded` and `configuration_folded` are the case-folded texts searches look into (folded in Python,
-- see backends/_agent_search.py); `configuration` is the JSON object, NULL when the agent has none.
CREATE TABLE agents (
    namespace            text COLLATE "C" NOT NULL,
    uri                  text COLLATE "C" NOT NULL,
    position             bigint GENERATED ALWAYS AS IDENTITY,
    name                 text NOT NULL,
    version              text NOT NULL,
    status               text NOT NULL,
    visibility           text NOT NULL,
    owner                text NOT NULL,      -- '' when unowned
    configuration        jsonb,
    update_time          double precision NOT NULL, -- seconds since the epoch
    name_folded          text NOT NULL,
    configuration_folded text NOT NULL,
    PRIMARY KEY (namespace, uri)
);

-- A search page reads the namespace in position order and stops at the page size.
CREATE UNIQUE INDEX agents_in_order ON agents (namespace, position);

-- Every version of each handler's manifest. The latest is the greatest (created_seconds, created_nanos,
-- version); the document is the rest of the manifest as JSON.
CREATE TABLE handler_manifests (
    namespace       text COLLATE "C" NOT NULL,
    handler_id      text COLLATE "C" NOT NULL,
    version         text COLLATE "C" NOT NULL,
    created_seconds bigint NOT NULL,
    created_nanos   integer NOT NULL,
    document        jsonb NOT NULL,
    PRIMARY KEY (namespace, handler_id, version)
);

CREATE INDEX handler_manifests_by_time
    ON handler_manifests (namespace, handler_id, created_seconds, created_nanos, version);

CREATE TABLE manifest_transformers (
    namespace    text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    handler_id   text COLLATE "C" NOT NULL,
    from_version text COLLATE "C" NOT NULL,
    to_version   text COLLATE "C" NOT NULL,
    document     jsonb NOT NULL,
    PRIMARY KEY (namespace, id)
);

CREATE INDEX manifest_transformers_by_versions
    ON manifest_transformers (namespace, handler_id, from_version, to_version, id);

-- Hook manifests, GTypes, version graphs and Timescape metadata: stored, read and listed by key only.
-- `version` is '' for the kinds keyed by one id.
CREATE TABLE manifest_documents (
    namespace text COLLATE "C" NOT NULL,
    kind      text NOT NULL,
    id        text COLLATE "C" NOT NULL,
    version   text COLLATE "C" NOT NULL,
    document  jsonb NOT NULL,
    PRIMARY KEY (namespace, kind, id, version)
);
