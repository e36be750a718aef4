"""The schema's history: every migration's SQL, in order, and the values its CHECKs allow.

`database.migrate` runs them; each brings `PRAGMA user_version` from N-1 to N
(https://www.sqlite.org/pragma.html#pragma_user_version). Append only: a shipped migration is
never edited, since databases already upgraded by it would not run it again.
"""

from __future__ import annotations

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped", "unknown")
# `failed`: the attempt ended the recipient as failed. `deferred`: refused for now (throttling,
# a 4xx, a paused account) or settled by a person as not sent; the recipient stays pending.
LOG_STATUSES = ("sending", "sent", "failed", "deferred", "unknown", "dry_run")
# Attempts that may have reached a mailbox: the daily limit counts all of them. A deferred
# attempt was refused before it left (or a person settled that it did not), so it does not count.
COUNTED_LOG_STATUSES = ("sending", "sent", "unknown")



def _one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK that `column` is one of `values`, as an OR chain.

    `column IN ('a', 'b', ...)` makes SQLite build a small ephemeral table each time the INSERT
    statement runs: with executemany that is once per row, a third of a large import's time.
    """
    return "(" + " OR ".join(f"{column} = '{value}'" for value in values) + ")"


_V1 = f"""
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    subject_template TEXT NOT NULL,
    html_template TEXT NOT NULL,
    text_template TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK {_one_of("status", ("active", "paused"))},
    created_at TEXT NOT NULL
);
CREATE TABLE recipients (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    email TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '',
    custom_subject TEXT,
    custom_body TEXT,
    fields TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL DEFAULT 'pending' CHECK {_one_of("status", RECIPIENT_STATUSES)},
    last_error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    UNIQUE (email, campaign_id)  -- email first: it also serves every lookup by address alone
);
CREATE INDEX recipients_queue ON recipients (status, id);
CREATE TABLE send_log (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    attempt_id TEXT NOT NULL UNIQUE,
    batch_date TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK {_one_of("status", ("sending", "sent", "failed", "unknown", "dry_run"))},
    message_id TEXT,
    subject TEXT,
    error TEXT,
    error_class TEXT,
    transport TEXT NOT NULL
);
CREATE INDEX send_log_daily ON send_log (batch_date, status);
CREATE INDEX send_log_recipient ON send_log (recipient_id);
CREATE TABLE suppressions (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE admin_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
"""

# SES events read from SQS (events.py): each stored once, so a redelivered message applies once.
_V2_SES_EVENTS = """
CREATE TABLE ses_events (
    dedupe_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    email TEXT,
    message_id TEXT,
    attempt_id TEXT,
    detail TEXT,
    event_at TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX ses_events_email ON ses_events (email);
CREATE INDEX ses_events_attempt ON ses_events (attempt_id);
"""

# The dashboard lists events by the day they arrived, and every events drain looks for the
# attempts still in doubt: without these, both are full scans of a large table.
_V3_EVENTS_BY_ARRIVAL = """
CREATE INDEX ses_events_received ON ses_events (received_at);
CREATE INDEX send_log_unknown ON send_log (status) WHERE status = 'unknown';
CREATE INDEX ses_events_rejects ON ses_events (kind) WHERE kind IN ('REJECTED', 'RENDERING_FAILED');
CREATE INDEX send_log_resolved_pending ON send_log (status)
    WHERE status = 'failed' AND error LIKE '%resolved as pending%';
"""

# send_log gets the `deferred` status and a `resolution` column (how an attempt in doubt was
# settled: sent, failed, pending, or disputed = settled as pending and SES reported it later),
# which replaces the LIKE on the "resolved as ..." notes in `error`. A CHECK cannot be altered, so the table is rebuilt
# (https://sqlite.org/lang_altertable.html#otheralter); existing rows are converted:
# - resolution from the notes `resolve` and the events drain appended to `error`;
# - `failed` -> `deferred` where the recipient was left pending: a fatal refusal (never the
#   recipient's fault), an attempt resolved as pending, and a transient refusal unless it is the
#   recipient's last attempt and the recipient ended `failed` (attempts used up).
_V4_DEFERRED_AND_RESOLUTION = f"""
CREATE TABLE send_log_v4 (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    attempt_id TEXT NOT NULL UNIQUE,
    batch_date TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK {_one_of("status", ("sending", "sent", "failed", "deferred", "unknown", "dry_run"))},
    message_id TEXT,
    subject TEXT,
    error TEXT,
    error_class TEXT,
    transport TEXT NOT NULL,
    resolution TEXT CHECK (resolution IS NULL OR {_one_of("resolution", ("sent", "failed", "pending", "disputed"))})
);
INSERT INTO send_log_v4 (id, recipient_id, attempt_id, batch_date, attempted_at, finished_at, status, message_id,
                         subject, error, error_class, transport, resolution)
SELECT l.id, l.recipient_id, l.attempt_id, l.batch_date, l.attempted_at, l.finished_at,
       CASE WHEN l.status != 'failed' THEN l.status
            WHEN l.error LIKE '%[resolved as pending by %' THEN 'deferred'
            WHEN l.error_class = 'fatal' THEN 'deferred'
            WHEN l.error_class = 'transient' AND NOT (
                r.status = 'failed' AND l.id = (SELECT max(n.id) FROM send_log n WHERE n.recipient_id = l.recipient_id
                                                 AND n.status != 'dry_run')) THEN 'deferred'
            ELSE 'failed' END,
       l.message_id, l.subject, l.error, l.error_class, l.transport,
       CASE WHEN l.error LIKE '%[SES later reported this send%' THEN 'disputed'
            WHEN l.error LIKE '%[resolved as pending by %' THEN 'pending'
            WHEN l.error LIKE '%[resolved as sent by %' THEN 'sent'
            WHEN l.error LIKE '%[resolved as not sent by %' THEN 'failed' END
FROM send_log l LEFT JOIN recipients r ON r.id = l.recipient_id;
DROP TABLE send_log;
ALTER TABLE send_log_v4 RENAME TO send_log;
CREATE INDEX send_log_daily ON send_log (batch_date, status);
CREATE INDEX send_log_recipient ON send_log (recipient_id);
CREATE INDEX send_log_unknown ON send_log (status) WHERE status = 'unknown';
CREATE INDEX send_log_resolved_pending ON send_log (resolution) WHERE resolution = 'pending';
"""

# `suppressions` keeps the first reason and date; every request and removal is kept here. Seeded
# from the audit trail (every past suppress and unsuppress, by hand or from SES events), then
# from the list itself for any address the trail does not name. A reason a later `suppress`
# overwrote is put back from the audit row written with the entry (same time, same address).
_V5_SUPPRESSION_HISTORY = """
CREATE TABLE suppression_history (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action = 'suppress' OR action = 'unsuppress'),
    reason TEXT,
    source TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX suppression_history_email ON suppression_history (email, id);
INSERT INTO suppression_history (email, action, reason, source, at)
SELECT target, action, CASE WHEN action = 'suppress' THEN coalesce(nullif(detail, ''), 'manual') END, actor, at
FROM admin_log WHERE action IN ('suppress', 'unsuppress') ORDER BY id;
INSERT INTO suppression_history (email, action, reason, source, at)
SELECT email, 'suppress', reason, source, created_at FROM suppressions s
WHERE NOT EXISTS (SELECT 1 FROM suppression_history h WHERE h.email = s.email) ORDER BY created_at;
UPDATE suppressions SET (reason, source) = (
    SELECT CASE WHEN a.actor = 'ses-event' AND instr(a.detail, ': ') > 0 THEN substr(a.detail, 1, instr(a.detail, ': ') - 1)
                ELSE coalesce(nullif(a.detail, ''), suppressions.reason) END, a.actor
    FROM admin_log a WHERE a.action = 'suppress' AND a.target = suppressions.email AND a.at = suppressions.created_at
    ORDER BY a.id LIMIT 1)
WHERE EXISTS (SELECT 1 FROM admin_log a WHERE a.action = 'suppress' AND a.target = suppressions.email
              AND a.at = suppressions.created_at);
"""

# Imports in short chunks (import_csv.py): a recipient row carries the import that added it, and
# rows of an import still `running` are invisible to the queue and the reports until it is `done`.
# import_id 0: added before this migration. ADD COLUMN with a constant default rewrites nothing
# (https://www.sqlite.org/lang_altertable.html#altertabaddcol).
_V6_IMPORTS = """
CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    created_campaign INTEGER NOT NULL DEFAULT 0,
    file TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'running' OR state = 'done' OR state = 'failed'),
    first_recipient_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    inserted INTEGER,
    duplicates INTEGER,
    invalid INTEGER,
    error TEXT
);
ALTER TABLE recipients ADD COLUMN import_id INTEGER NOT NULL DEFAULT 0;
"""

# Replies (inbox.py, applications.py): each recipient's application status and its history, the
# messages read from the inbox (each once: UNIQUE dedupe_key), how far each mailbox was read, and
# on send_log the bounce a delivery report brought back. Lookups by Message-ID go through an index.
APPLICATION_STATUSES = ("none", "replied", "interview", "offer", "rejected", "not_interested")
INBOX_KINDS = ("reply", "auto_reply", "bounce", "unsubscribe", "ignored")
_V7_REPLIES = f"""
ALTER TABLE recipients ADD COLUMN application_status TEXT NOT NULL DEFAULT 'none'
    CHECK {_one_of("application_status", APPLICATION_STATUSES)};
ALTER TABLE recipients ADD COLUMN application_note TEXT;
ALTER TABLE recipients ADD COLUMN application_source TEXT;
ALTER TABLE recipients ADD COLUMN application_changed_at TEXT;
CREATE INDEX recipients_application ON recipients (application_status) WHERE application_status != 'none';
CREATE TABLE application_changes (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    status TEXT NOT NULL,
    note TEXT,
    source TEXT NOT NULL CHECK {_one_of("source", ("manual", "inbox"))},
    changed_at TEXT NOT NULL
);
CREATE INDEX application_changes_recipient ON application_changes (recipient_id);
ALTER TABLE send_log ADD COLUMN bounced_at TEXT;
ALTER TABLE send_log ADD COLUMN bounce_status TEXT;
CREATE INDEX send_log_message_id ON send_log (message_id) WHERE message_id IS NOT NULL;
CREATE TABLE inbox_state (
    mailbox TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    read_at TEXT NOT NULL
);
CREATE TABLE inbox_messages (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK {_one_of("kind", INBOX_KINDS)},
    recipient_id INTEGER REFERENCES recipients(id),
    send_log_id INTEGER REFERENCES send_log(id),
    from_email TEXT,
    subject TEXT,
    snippet TEXT,
    message_id TEXT,
    dated_at TEXT,
    detail TEXT,
    read_at TEXT NOT NULL
);
CREATE INDEX inbox_messages_kind ON inbox_messages (kind, dated_at) WHERE kind != 'ignored';
CREATE INDEX inbox_messages_recipient ON inbox_messages (recipient_id) WHERE recipient_id IS NOT NULL;
"""

# Deliverability loop (bounces.py, circuit_breaker.py, ses_suppression.py): every bounce and
# complaint from any source, the circuit breaker's pauses, and what SES's account-level
# suppression list was asked about or told.
_V8_DELIVERABILITY = f"""
CREATE TABLE bounces (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    kind TEXT NOT NULL CHECK {_one_of("kind", ("hard", "soft", "complaint"))},
    source TEXT NOT NULL,
    campaign_id INTEGER REFERENCES campaigns(id),
    attempt_id TEXT,
    message_id TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE INDEX bounces_at ON bounces (at);
CREATE INDEX bounces_email ON bounces (email, kind);
CREATE TABLE sending_pauses (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    paused_at TEXT NOT NULL,
    lifted_at TEXT,
    lifted_by TEXT
);
CREATE INDEX sending_pauses_scope ON sending_pauses (scope, lifted_at);
CREATE INDEX send_log_attempted ON send_log (attempted_at);
CREATE TABLE ses_suppression_checks (
    email TEXT PRIMARY KEY,
    listed INTEGER NOT NULL,
    checked_at TEXT NOT NULL
);
CREATE TABLE ses_suppression_pushed (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    pushed_at TEXT NOT NULL
);
CREATE TABLE sync_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Files sent with every message of a campaign (`template set --attach`) and with one recipient's
# (the CSV's `attachments` column): JSON lists of absolute paths, NULL for none.
_V9_ATTACHMENTS = """
ALTER TABLE campaigns ADD COLUMN attachments TEXT;
ALTER TABLE recipients ADD COLUMN attachments TEXT;
"""

# Named templates per segment (a recipient's `template` column picks one, else the campaign's
# own), subject variants (JSON lists of subject templates, NULL for a single subject), and on
# each send the template and subject variant it used, so replies can be counted per variant.
_V10_TEMPLATES_AND_VARIANTS = """
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    name TEXT NOT NULL,
    subject_template TEXT NOT NULL,
    subject_variants TEXT,
    html_template TEXT NOT NULL,
    text_template TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (campaign_id, name)
);
ALTER TABLE campaigns ADD COLUMN subject_variants TEXT;
ALTER TABLE recipients ADD COLUMN template TEXT;
ALTER TABLE send_log ADD COLUMN template TEXT;
ALTER TABLE send_log ADD COLUMN subject_variant TEXT;
CREATE INDEX recipients_segment ON recipients (campaign_id, template, id);
"""

# Follow-up sequences (sequences.py): a campaign's steps 2..n, each recipient's step (the step
# its `status` is about: pending = that step is still to be sent), why its sequence stopped for
# good, and the step of each attempt (the ledger claims per recipient and step); and each
# recipient's IANA time zone from the CSV ('' = TIMEZONE), for send windows.
_V11_SEQUENCES = """
CREATE TABLE campaign_steps (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    step INTEGER NOT NULL CHECK (step >= 2),
    after_days INTEGER NOT NULL CHECK (after_days >= 1),
    subject_template TEXT,
    html_template TEXT NOT NULL,
    text_template TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (campaign_id, step)
);
ALTER TABLE recipients ADD COLUMN step INTEGER NOT NULL DEFAULT 1;
ALTER TABLE recipients ADD COLUMN sequence_stopped TEXT;
ALTER TABLE send_log ADD COLUMN step INTEGER NOT NULL DEFAULT 1;
ALTER TABLE recipients ADD COLUMN timezone TEXT NOT NULL DEFAULT '';
"""

# Per-segment versions of follow-up steps: recipients whose `template` column names `name` get
# this version of the step (keyed by the step's row, which keeps its id when later steps move up),
# the others the step's default.
_V12_STEP_TEMPLATES = """
CREATE TABLE step_templates (
    id INTEGER PRIMARY KEY,
    step_id INTEGER NOT NULL REFERENCES campaign_steps(id),
    name TEXT NOT NULL,
    subject_template TEXT,
    html_template TEXT NOT NULL,
    text_template TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (step_id, name)
);
"""

# Per-company limits re-checked inside each claim (politeness.claim_refusal) through an index, not
# a scan of the campaign: people by campaign and company as SQL can fold it (trimmed and
# lower-cased company, else the address's domain), and apart the few rows SQL cannot fold as
# Python does (a character outside printable ASCII, two spaces in a row, two @ in the address).
# And the Activity view's sends per day and step read from one covering index, in its GROUP BY's
# order (no temporary B-tree: 25 ms for 30 days of a million-row log).
# https://sqlite.org/expridx.html https://sqlite.org/partialindex.html https://sqlite.org/queryplanner.html#covidx
_V13_COMPANY_AND_STEP_INDEXES = """
CREATE INDEX recipients_company ON recipients (campaign_id,
    (CASE WHEN trim(company) = '' THEN lower(substr(email, instr(email, '@') + 1)) ELSE lower(trim(company)) END));
CREATE INDEX recipients_odd_company ON recipients (campaign_id)
    WHERE company GLOB '*[^ -~]*' OR instr(company, '  ') > 0 OR email GLOB '*[^ -~]*'
    OR instr(substr(email, instr(email, '@') + 1), '@') > 0;
CREATE INDEX send_log_daily_step ON send_log (batch_date, step, status);
"""

# The two company indexes hold only the rows a claim counts, never a fresh one (pending at step 1,
# the state an import writes): an import of new people then writes neither (a million-row import
# spent 5-6 s of its time in them). The claim's counts (politeness.claim_refusal) name the same
# condition so that SQLite uses them (https://sqlite.org/partialindex.html#queries_using_partial_indexes).
# That is exact only while a recipient whose first message may have gone (a step-1 attempt
# `sending`, `sent` or `unknown`) is never fresh: the triggers refuse any write that would make
# it so, loudly, rather than let the day's per-company count miss someone.
# A step-1 attempt that counts, written for a recipient still fresh (both send_log triggers).
_COUNTED_FOR_A_FRESH_RECIPIENT = """NEW.step = 1 AND NEW.status IN ('sending', 'sent', 'unknown') AND EXISTS (
        SELECT 1 FROM recipients WHERE id = NEW.recipient_id AND status = 'pending' AND step = 1)"""
_V14_COMPANY_INDEXES_WITHOUT_FRESH_ROWS = f"""
DROP INDEX recipients_company;
DROP INDEX recipients_odd_company;
CREATE INDEX recipients_company ON recipients (campaign_id,
    (CASE WHEN trim(company) = '' THEN lower(substr(email, instr(email, '@') + 1)) ELSE lower(trim(company)) END))
    WHERE (status != 'pending' OR step > 1);
CREATE INDEX recipients_odd_company ON recipients (campaign_id)
    WHERE (company GLOB '*[^ -~]*' OR instr(company, '  ') > 0 OR email GLOB '*[^ -~]*'
    OR instr(substr(email, instr(email, '@') + 1), '@') > 0) AND (status != 'pending' OR step > 1);
CREATE TRIGGER recipients_first_message_stays_counted BEFORE UPDATE OF status, step ON recipients
    WHEN NEW.status = 'pending' AND NEW.step = 1 AND EXISTS (SELECT 1 FROM send_log WHERE recipient_id = NEW.id
        AND step = 1 AND status IN ('sending', 'sent', 'unknown'))
BEGIN
    SELECT RAISE(ABORT, 'a recipient whose first message may have gone cannot be pending again');
END;
CREATE TRIGGER send_log_counted_attempt_of_a_fresh_recipient BEFORE INSERT ON send_log
    WHEN {_COUNTED_FOR_A_FRESH_RECIPIENT}
BEGIN
    SELECT RAISE(ABORT, 'a first message is logged before its recipient is claimed');
END;
CREATE TRIGGER send_log_counted_again_for_a_fresh_recipient BEFORE UPDATE OF status, step ON send_log
    WHEN {_COUNTED_FOR_A_FRESH_RECIPIENT}
BEGIN
    SELECT RAISE(ABORT, 'a first message is counted again while its recipient is pending');
END;
"""

# The same index as migration 14's recipients_odd_company (the same rows, the same key), with its
# cheap half first: SQLite evaluates a partial index's WHERE for every row it inserts, left to
# right, and an AND stops at its first false term (https://sqlite.org/partialindex.html). Every
# row an import writes is fresh, so two column comparisons now settle it where four pattern
# matches over its company and address did (a 200,000-row import: 2.2 s -> 1.7 s of SQLite's
# CPU, benchmarks/bench_import.py). The claim's query names both halves, so it still uses the index.
_V15_ODD_COMPANY_FRESH_ROWS_FIRST = """
DROP INDEX recipients_odd_company;
CREATE INDEX recipients_odd_company ON recipients (campaign_id)
    WHERE (status != 'pending' OR step > 1) AND (company GLOB '*[^ -~]*' OR instr(company, '  ') > 0
    OR email GLOB '*[^ -~]*' OR instr(substr(email, instr(email, '@') + 1), '@') > 0);
"""

# The reply rate per subject variant reads each recipient's last send that went out with a variant.
# This index holds only those sends, in recipient order, with the columns the query reads: no
# scan of the whole log and no temporary B-tree to group it (a million sends, two thirds with a
# variant: 590 -> 190 ms; none with one: 140 -> 0 ms). A claim ('sending') never enters it, and a
# send without a variant never does (https://sqlite.org/partialindex.html). `status` is in it for
# the query's own check of the index's WHERE, so no row is read (a covering index).
_V16_VARIANT_SENDS = """
CREATE INDEX send_log_variant ON send_log (recipient_id, template, subject_variant, status)
    WHERE subject_variant IS NOT NULL AND status IN ('sent', 'unknown');
"""

# Year-long dashboard views (a million sends) read their figures from indexes alone, without a
# row of the table each (https://sqlite.org/queryplanner.html#covidx):
# - send_log_daily_step gains recipient_id, so a campaign or address filter and the count of
#   distinct recipients are answered from it too. Same number of indexes on send_log as before,
#   so a claim and an outcome write touch the same ones; its entries are a few bytes wider.
# - The bounce and complaint rates start from the few events that carry bad news (hard
#   bounces, complaints) and find their sends by attempt_id, instead of looking up every send's
#   events (1.9 s for a year of 900k sends among 1.8M events). A partial index holds only those
#   events (https://sqlite.org/partialindex.html).
# - The SES events per kind over a range are counted by kind, a range of received_at each
#   (2.2 s for a year of 1.8M events read row by row); email is in it for an address search.
# - The events' page, newest first, tests an address search in ses_events_received, which gains
#   email: the events it passes over are not read (a rare address over a year: 1.5 s).
# None of these is on the send path: SES events are written by `events` and before a run.
_V17_YEAR_LONG_VIEWS = """
DROP INDEX send_log_daily_step;
CREATE INDEX send_log_daily_step ON send_log (batch_date, step, status, recipient_id);
CREATE INDEX ses_events_bad_news ON ses_events (kind, attempt_id) WHERE kind IN ('BOUNCED_PERMANENT', 'COMPLAINED');
CREATE INDEX ses_events_kind ON ses_events (kind, received_at, email);
DROP INDEX ses_events_received;
CREATE INDEX ses_events_received ON ses_events (received_at, email);
"""

# Ordered, append-only: migration N brings user_version from N-1 to N. Never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (_V1, _V2_SES_EVENTS, _V3_EVENTS_BY_ARRIVAL, _V4_DEFERRED_AND_RESOLUTION,
                               _V5_SUPPRESSION_HISTORY, _V6_IMPORTS, _V7_REPLIES, _V8_DELIVERABILITY,
                               _V9_ATTACHMENTS, _V10_TEMPLATES_AND_VARIANTS,
                               _V11_SEQUENCES, _V12_STEP_TEMPLATES,
                               _V13_COMPANY_AND_STEP_INDEXES, _V14_COMPANY_INDEXES_WITHOUT_FRESH_ROWS,
                               _V15_ODD_COMPANY_FRESH_ROWS_FIRST, _V16_VARIANT_SENDS,
                               _V17_YEAR_LONG_VIEWS)
SCHEMA_VERSION = len(MIGRATIONS)
