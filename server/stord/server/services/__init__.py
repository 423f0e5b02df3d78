"""What the servicers of every contract share: request checks (`_validate`), messages as JSON documents
(`_message_json`); and the event servicer, until the events package takes it over.

Each contract's own servicer lives in its package (`kv.service`, `documents.service`, ...).
"""
