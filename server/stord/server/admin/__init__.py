"""Admin: AdminService, the daemon's version, backends, their health and fallbacks."""
