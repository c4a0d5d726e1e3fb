"""`download_queue.db`'s schema, as the migrations that build it.

The queue is one table of items (albums and their children, watchdog repairs), an append-only
audit log written in the same transaction as each transition (`storage.queue.audit`), per-hour
activity counters (`storage.queue.activity`), maintained ranks for queue positions
(`storage.queue.positions`), the content the watchdog gave up on (`storage.queue.marks`), and
whether an admin has paused the queue (`storage.queue.pause`).
Only PENDING rows are in the claim index, so items waiting in RETRY_WAITING (however many) never
slow a claim; they are promoted by `next_retry_at` through their own index. A migration, once
released, is never edited: a change is a new one at the end.
"""

from __future__ import annotations

# The levels of `queue_rank` (migration 3): bucket = created_at >> shift, one bucket of a level
# spanning 2**RANK_FANOUT_BITS buckets of the level below. The triggers carry these values in
# their SQL; changing them needs a new migration that rebuilds the table and its triggers.
RANK_SHIFTS = (0, 6, 12, 18, 24, 30)
RANK_FANOUT_BITS = 6


MIGRATIONS = [
    [
        """CREATE TABLE queue_items (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            parent_id TEXT REFERENCES queue_items(id),
            status TEXT NOT NULL,
            priority INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            content_id TEXT NOT NULL,
            content_name TEXT,
            artist_name TEXT,
            request_source TEXT NOT NULL,
            requested_by TEXT,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            completed_at INTEGER,
            last_attempt_at INTEGER,
            next_retry_at INTEGER,
            retry_count INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL,
            error_type TEXT,
            error_message TEXT,
            bytes_downloaded INTEGER,
            processing_duration_ms INTEGER,
            children_created INTEGER NOT NULL DEFAULT 0,
            last_activity_at INTEGER)""",
        # A child exists once per parent and content.
        """CREATE UNIQUE INDEX queue_one_child
            ON queue_items(parent_id, content_type, content_id) WHERE parent_id IS NOT NULL""",
        # The claim order of SPEC §8.5; only PENDING rows are indexed.
        """CREATE INDEX queue_claim
            ON queue_items(priority, parent_id IS NULL, created_at, seq)
            WHERE status = 'PENDING'""",
        """CREATE INDEX queue_retry_due ON queue_items(next_retry_at)
            WHERE status = 'RETRY_WAITING'""",
        "CREATE INDEX queue_parent ON queue_items(parent_id, status)",
        "CREATE INDEX queue_content ON queue_items(content_id, status)",
        "CREATE INDEX queue_status ON queue_items(status, priority)",
        """CREATE INDEX queue_user ON queue_items(requested_by, created_at)
            WHERE parent_id IS NULL""",
        """CREATE INDEX queue_album_started ON queue_items(started_at)
            WHERE content_type = 'ALBUM' AND parent_id IS NULL""",
        "CREATE INDEX queue_completed ON queue_items(status, completed_at)",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            timestamp INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            queue_item_id TEXT,
            content_type TEXT,
            content_id TEXT,
            user TEXT,
            request_source TEXT,
            details TEXT)""",
        "CREATE INDEX audit_item ON audit_log(queue_item_id, id)",
        "CREATE INDEX audit_user ON audit_log(user, id)",
        "CREATE INDEX audit_type ON audit_log(event_type, id)",
        "CREATE INDEX audit_time ON audit_log(timestamp)",
        # Entries are never edited; retention may delete old ones.
        """CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
        """CREATE TABLE activity_hourly (
            hour INTEGER PRIMARY KEY,
            albums INTEGER NOT NULL DEFAULT 0,
            tracks INTEGER NOT NULL DEFAULT 0,
            images INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0)""",
    ],
    [
        # What may be claimed while the global capacity is used up (children and watchdog
        # repairs, not new albums), so that pending albums never lengthen that claim.
        """CREATE INDEX queue_claim_no_new_album
            ON queue_items(priority, parent_id IS NULL, created_at, seq)
            WHERE status = 'PENDING' AND (parent_id IS NOT NULL OR content_type <> 'ALBUM')""",
    ],
    [
        # Maintained ranks for `storage.queue.positions`: how many top-level PENDING items each
        # priority has per bucket of `created_at` (bucket = created_at >> shift) at each level
        # of RANK_SHIFTS (the VALUES lists below). The triggers keep it in step inside the
        # transaction of every change to queue_items, whichever code path makes it. A counter
        # that reaches 0 is deleted, so the table stays about one row per second in which
        # waiting top-level items were created.
        """CREATE TABLE queue_rank (
            shift INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            n INTEGER NOT NULL CHECK (n >= 0),
            PRIMARY KEY (shift, priority, bucket)) WITHOUT ROWID""",
        # +1 at every level for a row that enters the ranks (the `WHERE true` lets SQLite parse
        # an upsert after a SELECT).
        """CREATE TRIGGER queue_rank_insert AFTER INSERT ON queue_items
            WHEN NEW.status = 'PENDING' AND NEW.parent_id IS NULL BEGIN
                INSERT INTO queue_rank (shift, priority, bucket, n)
                    SELECT column1, NEW.priority, NEW.created_at >> column1, 1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)) WHERE true
                    ON CONFLICT (shift, priority, bucket) DO UPDATE SET n = n + 1;
            END""",
        # -1 at every level for a row that leaves them, and the counters left at 0 deleted.
        """CREATE TRIGGER queue_rank_delete AFTER DELETE ON queue_items
            WHEN OLD.status = 'PENDING' AND OLD.parent_id IS NULL BEGIN
                UPDATE queue_rank SET n = n - 1 WHERE (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
                DELETE FROM queue_rank WHERE n = 0 AND (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
            END""",
        # An update is the old image leaving and the new one entering, one trigger each, so an
        # update that touches no ranked row (a child, IN_PROGRESS to COMPLETED) costs only the
        # WHEN tests.
        """CREATE TRIGGER queue_rank_update_old
            AFTER UPDATE OF status, priority, created_at, parent_id ON queue_items
            WHEN OLD.status = 'PENDING' AND OLD.parent_id IS NULL BEGIN
                UPDATE queue_rank SET n = n - 1 WHERE (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
                DELETE FROM queue_rank WHERE n = 0 AND (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
            END""",
        """CREATE TRIGGER queue_rank_update_new
            AFTER UPDATE OF status, priority, created_at, parent_id ON queue_items
            WHEN NEW.status = 'PENDING' AND NEW.parent_id IS NULL BEGIN
                INSERT INTO queue_rank (shift, priority, bucket, n)
                    SELECT column1, NEW.priority, NEW.created_at >> column1, 1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)) WHERE true
                    ON CONFLICT (shift, priority, bucket) DO UPDATE SET n = n + 1;
            END""",
        # Backfill from the rows already there.
        """INSERT INTO queue_rank (shift, priority, bucket, n)
            SELECT column1, priority, created_at >> column1, COUNT(*)
            FROM queue_items, (VALUES (0), (6), (12), (18), (24), (30))
            WHERE status = 'PENDING' AND parent_id IS NULL GROUP BY 1, 2, 3""",
    ],
    [
        # Content the watchdog gave up on (`storage.queue.marks`): one row per content, the
        # failed repair that marked it and when.
        """CREATE TABLE unavailable_content (
            content_type TEXT NOT NULL,
            content_id TEXT NOT NULL,
            marked_at INTEGER NOT NULL,
            queue_item_id TEXT NOT NULL,
            PRIMARY KEY (content_type, content_id)) WITHOUT ROWID""",
        # One row counting every change to the marks, kept by the triggers below whichever code
        # path makes it: answers that show marks are kept until it moves.
        "CREATE TABLE unavailable_version (n INTEGER NOT NULL)",
        "INSERT INTO unavailable_version (n) VALUES (0)",
        """CREATE TRIGGER unavailable_insert AFTER INSERT ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
        """CREATE TRIGGER unavailable_update AFTER UPDATE ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
        """CREATE TRIGGER unavailable_delete AFTER DELETE ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
    ],
    [
        # Nothing keeps answers by the marks' version any more: drop the counter and the
        # triggers that moved it with every change to the marks.
        "DROP TRIGGER unavailable_insert",
        "DROP TRIGGER unavailable_update",
        "DROP TRIGGER unavailable_delete",
        "DROP TABLE unavailable_version",
    ],
    [
        # The queue's pause (`storage.queue.pause`): one row while an admin has the queue
        # paused, none otherwise, so a pause outlives a restart.
        """CREATE TABLE queue_pause (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            paused_by TEXT NOT NULL,
            paused_at INTEGER NOT NULL,
            reason TEXT)""",
        # The latest completions of one kind, newest first, for the estimates
        # (`storage.queue.estimates`): the last few of a kind are read at the same cost however
        # many items have completed, and whichever kinds they are.
        """CREATE INDEX queue_done_kind ON queue_items(content_type, completed_at)
            WHERE status = 'COMPLETED'""",
    ],
    [
        # Notifications (`storage.queue.notices`, SPEC §16 rev 2). The outbox: one row per
        # notification to deliver, written in the transaction of the change that causes it; `user`
        # is the requester it is for (NULL: the admins' URLs), whose URLs are read when it is
        # delivered. `delivered` lists the ids of the URLs already sent to, so a retry sends only
        # to those that failed. Only pending rows are in the due index.
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            created_at INTEGER NOT NULL,
            event TEXT NOT NULL,
            user TEXT,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            request_id TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            delivered TEXT NOT NULL DEFAULT '[]',
            last_error TEXT,
            finished_at INTEGER)""",
        "CREATE INDEX outbox_due ON outbox(next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX outbox_failed ON outbox(finished_at, id) WHERE state = 'failed'",
        "CREATE INDEX outbox_event ON outbox(event, created_at)",
        # Each user's inbox: request completions and failures, written with the outbox row.
        """CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            event TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            request_id TEXT,
            read INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX inbox_user ON inbox(user, id)",
        "CREATE INDEX inbox_unread ON inbox(user, id) WHERE read = 0",
    ],
    [
        # Retention of notifications (`NoticeStore.prune_chunk`, run by the daily
        # audit_log_cleanup job): the oldest delivered notifications and inbox items are found
        # through these, never by a scan (failed ones through `outbox_failed`).
        "CREATE INDEX outbox_done ON outbox(finished_at, id) WHERE state IN ('sent', 'skipped')",
        "CREATE INDEX inbox_time ON inbox(created_at, id)",
    ],
]
