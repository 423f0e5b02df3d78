"""`stord export` and `stord import`: a backend's data as JSON Lines, and back into any backend.

The format is described in `_format.py` (each field's check in `_fields.py`); the backends' side is
`TransferStore` (`port.py`). Export and import open the database directly, from the same settings as `stord
serve` (like pg_dump, not through a daemon): no RPC needed, and an export reads one consistent snapshot while
daemons keep serving.
"""

from stord.server.transfer._format import FORMAT, VERSION, FormatError
from stord.server.transfer._progress import Progress, ProgressStyle
from stord.server.transfer._run import Summary, TransferError, export_records, import_records

__all__ = [
    "FORMAT",
    "VERSION",
    "FormatError",
    "Progress",
    "ProgressStyle",
    "Summary",
    "TransferError",
    "export_records",
    "import_records",
]
