"""The `stord` command: `serve`, `migrate`, `health`, `config`, `keys`, `export`/`import` and the debug calls."""
