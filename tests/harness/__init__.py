"""Throwaway servers and in-process daemons for the tests; nothing here touches a server it did not start."""
