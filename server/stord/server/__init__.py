"""The stord daemon: `cli.main:main` is the `stord` command; `app.Daemon` is the server itself."""
