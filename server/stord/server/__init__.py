"""The stord daemon. `stord.server.cli.main:main` is the `stord` command; `app.Daemon` is the server itself."""
