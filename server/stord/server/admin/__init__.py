"""Admin: AdminService, which reports the daemon's version, backends, their health and fallbacks."""

from stord.server.admin.service import AdminServicer, BackendStatus

__all__ = ["AdminServicer", "BackendStatus"]
