"""What the queue's three stores share: one `Database`, the settings, and who hears of audits.

`QueueStore` (the processor), `RequestStore` (users) and `QueueAdminStore` (admins) are opened
over the same download_queue.db `Database` (one write connection). Their methods block; async
code calls them through `await store.db.run(store.method, ...)`, and every method takes `now`
where time matters, so tests control the clock. A write is one transaction; the audit events it
appended go to `on_audit` after the commit, never for a transaction that rolled back.
"""

from __future__ import annotations

from storage.db import Database
from storage.queue.model import DownloadManagerConfig, OnAudit, ignore_audit


class StoreBase:
    def __init__(
        self,
        db: Database,
        dm: DownloadManagerConfig | None = None,
        *,
        on_audit: OnAudit = ignore_audit,
    ) -> None:
        self.db = db
        self.dm = dm if dm is not None else DownloadManagerConfig()
        self.on_audit = on_audit
