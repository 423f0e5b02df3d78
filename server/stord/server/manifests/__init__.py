"""Manifests: the ManifestStoreService contract (handler manifests by version, hooks, GTypes, ...).

`port` is the store Protocol, `service` the servicer, `checks` what is verified before storing.
"""

__all__: list[str] = []
