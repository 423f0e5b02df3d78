"""Manifests: the ManifestStoreService contract: port, servicer, and the checks made before storing."""
