"""The front door: interceptors (auth -> namespace, log, metrics, errors), API keys, listen addresses, registry."""
