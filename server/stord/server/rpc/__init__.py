"""The front door: what every call passes through before a servicer, and what the server listens on.

`interceptors` (auth -> namespace, structured log, metrics, error mapping), `auth` (API keys and roles),
`listen` (TCP and Unix socket addresses), `registry` (every contract's service and the role serving it),
`page_tokens` (the one sealed page-token codec of every listing), `revocation` (ending open calls whose key
a reload revoked).
"""

__all__: list[str] = []
