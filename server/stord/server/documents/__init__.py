"""Documents: the DocumentService contract: port, servicer, field paths and the typed comparison rules."""
