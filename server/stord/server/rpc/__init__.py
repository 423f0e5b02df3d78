"""The front door of every RPC: what checks and seals a call before and after the servicer runs."""
