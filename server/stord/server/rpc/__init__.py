"""The front door: what every call passes through before a servicer, and what the server listens on.

`interceptors` (auth -> namespace, structured log, metrics, error mapping), `auth` (API keys and roles),
`listen` (TCP and Unix socket addresses), `registry` (every contract's service and the role serving it),
`page_tokens` (the one sealed page-token codec of every listing), `revocation` (ending open calls whose key
a reload revoked); and what every servicer reads: `calls` (the call context: namespace, principal, request
id), `validate` (request checks, each failure naming its field), `message_json` (messages as JSON documents,
checked for what JSON cannot hold).
"""

__all__: list[str] = []
