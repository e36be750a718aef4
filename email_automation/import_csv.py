"""Import recipients from the CSV files people actually have: Excel, Google Sheets, CRM exports.

Accepted: UTF-8 with or without BOM, UTF-16 with BOM, Windows-1252 and Latin-1; `,` `;` or tab
between fields; headers in any case and spacing, with common aliases ("E-mail", "Surname", ...).

The file is streamed (a million rows import in bounded memory) and written in chunks, each its own
short transaction, so a run waiting to record a send never waits long; the rows stay invisible
until the import is done and are removed if it fails (see imports.py): all or nothing for the user.
Problems are reported as `file:line: 'field': reason`, with the physical line on which the record
starts (a quoted cell spanning several lines still points at its first line).

Addresses are stored trimmed and lower-cased (`Ann@X.com ` and `ann@x.com` are one recipient:
spreadsheets are full of such near-duplicates and in practice no provider delivers them to
different people), with an internationalised domain in its ASCII (IDNA) form, which SES needs.
"""

from __future__ import annotations

import codecs
import csv
import io
import keyword
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError

from . import attachments, import_rows, imports, template_columns
from .addresses import normalize_email
from .database import DEFAULT_CAMPAIGN, DEFAULT_TEMPLATE, iso, transaction, utc_now
from .errors import CsvImportError
from .reports import csv_safe
from .user_files import is_database_file

MAX_REJECTS_IN_MEMORY = 1000
SAMPLE_BYTES = 64 * 1024
# Rows per write transaction. Each commit writes every page the chunk touched to the WAL, and the
# email and company indexes take their rows all over the B-tree: with a million rows in the table a
# chunk of 5,000 touches as many index pages as it has rows, so the log was written over and over
# (1M rows: 40-56 s with 5,000, 29-38 s with 20,000, bench_import.py). The price: another writer
# may wait for the lock up to the longest chunk, 0.8 s at 1M rows (https://www.sqlite.org/wal.html#concurrency).
CHUNK_ROWS = 20_000
STATEMENT_ROWS = 1000
PAGE_CACHE_MIB = 64  # holds the pages a chunk dirties, so none spills to the log mid-chunk; a fixed bound
DELIMITERS = ",;\t"

RECIPIENT_FIELDS = ("email", "first_name", "last_name", "company", "custom_subject", "custom_body", "attachments",
                    "template", "timezone")
# Header spellings seen in real exports, compared after `header_key` (lower-case, no spaces,
# dashes or underscores). "Subject"/"Body" in a recipient list can only mean a per-row override;
# a bare "Address" is left out on purpose: in CRM exports it is as often the postal address.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "mail", "mailaddress", "emailid", "workemail"),
    "first_name": ("firstname", "first", "givenname", "forename", "fname"),
    "last_name": ("lastname", "last", "surname", "familyname", "lname"),
    "company": ("company", "companyname", "organization", "organisation", "org", "employer", "accountname"),
    "custom_subject": ("customsubject", "subject"),
    "custom_body": ("custombody", "body"),
    "attachments": ("attachments", "attachment", "files", "file"),
    "template": ("template", "templatename"),
    "timezone": ("timezone", "tz", "timezonename", "ianatimezone"),
}
_FIELD_BY_KEY = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
# Names a template already uses for the recipient, and words Jinja cannot take as a variable.
_RESERVED_KEYS = frozenset(ALIASES) | {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none"}
# A column named like a built-in keeps its name (templates written for it read `fields.campaign`),
# and `{{ campaign }}` stays the built-in: the import's Note says so.
_BUILTIN_KEYS = frozenset(template_columns.BUILTIN_VARIABLES) | {"subject"}

# cp1252 leaves these five bytes undefined: a file holding one of them can only be Latin-1.
# (Found by deleting every other byte, at C speed: a regular expression's character class took
# 0.5 s of a million-row file's scan, bytes.translate 0.03 s.)
_NOT_CP1252_UNDEFINED = bytes(b for b in range(256) if b not in b"\x81\x8d\x8f\x90\x9d")
# A byte that is not UTF-8, as Python's "surrogateescape" error handler hands it over (PEP 383).
_STRAY = re.compile("[\udc80-\udcff]")
_LABELS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "cp1252": "Windows-1252", "latin-1": "Latin-1"}
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if not (b < 0x20 and b not in b"\t\n\r" or b == 0x7F))
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
# What no imported field may hold: C0 controls but tab, CR and LF (a multi-line cell has those; the
# renderer folds them to spaces in a subject), DEL, C1 controls (Unicode general category Cc), and
# undecodable bytes. A NUL or ESC in a name or subject would otherwise go out raw in a header.
_UNFIT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\udc80-\udcff]")

# The recipients columns of normalize_row's tuple, in its order.
STORED_COLUMNS = ("email", "first_name", "last_name", "company", "custom_subject", "custom_body", "attachments",
                  "template", "fields", "timezone")
# Bound as "" and stored as NULL by the INSERT: Python's sqlite3 looks for an adapter for every None
# it binds (never for a str), 0.6 µs a None, more than binding the rest of the row
# (https://docs.python.org/3/library/sqlite3.html#how-to-adapt-custom-python-types-to-sqlite-values).
_NULL_WHEN_EMPTY = frozenset({"custom_subject", "custom_body", "attachments", "template"})
_SHARED_PARAMS = 3  # campaign_id, import_id, created_at: ?1 ?2 ?3 of every statement


@dataclass(frozen=True)
class Reject:
    """An invalid row: the physical `line` its record starts on, the column at fault and why."""

    line: int
    field: str
    reason: str

    def message(self, file: str | Path) -> str:
        """The one line shown for it: `file:line: 'field': reason` (never the cell's value, which
        may hold the very control characters that made it invalid)."""
        return f"{file}:{self.line}: {self.field!r}: {self.reason}"


@dataclass
class ImportReport:
    """Exact counts; `rejects` keeps only the first MAX_REJECTS_IN_MEMORY (all are in the file)."""

    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    rejects_file: Path | None = None
    rejects: list[Reject] = field(default_factory=list)
    campaign: str = DEFAULT_CAMPAIGN
    renamed: tuple[tuple[str, str], ...] = ()  # (header, how a template reads it) of those not read as {{ header }}

    def renamed_note(self) -> str | None:
        """The line that says which columns a template reads under another name than their header's."""
        if not self.renamed:
            return None
        shown = ", ".join(f"{header.strip()!r} is {{{{ {key} }}}}" if header.strip() else f"the column without a "
                          f"header is {{{{ {key} }}}}" for header, key in self.renamed)
        return (f"Note: in templates, {shown} (a recipient field, a built-in, another column or a word Jinja "
                "keeps has its name).")

    def as_dict(self) -> dict:
        return {
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
        }


@dataclass
class Columns:
    """Where each recipient field sits in a row (an absent one reads as ""); extras become template variables."""

    header: tuple[str, ...]
    positions: dict[str, int]
    extras: tuple[tuple[int, str], ...] = ()
    delimiter: str = field(default=",", compare=False)  # named in the reason a too-wide row is refused
    renamed: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # see ImportReport.renamed
    # The columns this file gives a value: its fields (the table's default is what an absent one
    # would be written as) and `fields` when it has extra columns.
    stored: tuple[str, ...] = field(init=False, compare=False)
    _pick: Callable = field(init=False, repr=False, compare=False)
    _stored_at: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # (index, the JSON key with its colon) of each extra column: what fields_json writes before a value.
    json_pairs: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        blank = len(self.header)  # `padded` puts an empty string at this index of every row
        self._pick = itemgetter(*(self.positions.get(name, blank) for name in RECIPIENT_FIELDS))
        self.json_pairs = tuple((index, encode_basestring(key) + ":") for index, key in self.extras)
        self.stored = tuple(name for name in STORED_COLUMNS
                            if name in self.positions or name == "email" or (name == "fields" and self.extras))
        self._stored_at = tuple(STORED_COLUMNS.index(name) for name in self.stored)

    def stored_values(self, recipient: tuple) -> tuple:
        """normalize_row's tuple cut to `stored`, with "" for None (see _NULL_WHEN_EMPTY)."""
        return tuple("" if recipient[index] is None else recipient[index] for index in self._stored_at)

    @property
    def email(self) -> int | None:
        return self.positions.get("email")

    def padded(self, values: list[str]) -> list[str]:
        """The row cut or filled to the header's width, plus the blank slot for absent fields."""
        missing = len(self.header) - len(values)
        return values + [""] * (missing + 1) if missing >= 0 else values[:missing] + [""]

    def recipient_values(self, row: list[str]) -> tuple[str, ...]:
        """The RECIPIENT_FIELDS of a padded row, untrimmed."""
        return self._pick(row)

    def fields_json(self, row: list[str]) -> str:
        """The extra columns of a padded row as a JSON object (hand-joined: ten times json.dumps' speed)."""
        return "{" + ",".join([key + encode_basestring(row[index].strip()) for index, key in self.json_pairs]) + "}"


class InvalidRow(ValueError):
    """A row that cannot become a recipient: `column` (index into the row) is at fault, or the
    column `field` the file lacks; the message says why."""

    def __init__(self, column: int, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.column = column
        self.field = field


# --- pure helpers ---------------------------------------------------------------------------

def header_key(name: str) -> str:
    """`E-mail`, ` email_address ` and `EMAIL ADDRESS` compare equal to their alias."""
    return re.sub(r"[\s_\-.]+", "", name.replace("\ufeff", "")).lower()


def _plain_key(name: str) -> str:
    """`Referral Source` -> `referral_source`: a header as a name, before `field_key`'s rules."""
    return re.sub(r"[\W_]+", "_", name.strip().lower()).strip("_")


def field_key(name: str, position: int) -> str:
    """A header as a Jinja variable name: `Referral Source` -> `referral_source`."""
    key = _plain_key(name)
    if not key:
        return f"column_{position}"
    if key[0].isdigit():
        key = "_" + key
    if key in _RESERVED_KEYS or keyword.iskeyword(key):
        key += "_"
    return key


def map_header(header: list[str], delimiter: str = ",") -> Columns:
    """Match columns to recipient fields by alias; the first match wins, the rest are extras."""
    found: dict[str, int] = {}
    extras: list[tuple[int, str]] = []
    renamed: list[tuple[str, str]] = []
    taken = set(_RESERVED_KEYS)
    for index, name in enumerate(header):
        target = _FIELD_BY_KEY.get(header_key(name))
        if target and target not in found:
            found[target] = index
            continue
        key = base = field_key(name, index + 1)
        suffix = 2
        while key in taken:
            key, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(key)
        extras.append((index, key))
        if key in _BUILTIN_KEYS:
            renamed.append((name, f"fields.{key}"))
        elif key != _plain_key(name):
            renamed.append((name, key))
    return Columns(tuple(header), found, tuple(extras), delimiter, tuple(renamed))


@dataclass(frozen=True)
class Encoding:
    """How to read a file, and whether any cell may need `check_text` (False: the scan proved none does)."""

    name: str
    check: bool


def detect_encoding(chunks: Iterable[bytes]) -> Encoding:
    """UTF-8 (BOM or not) unless most of the file's non-ASCII text is not UTF-8; else Windows-1252, else Latin-1.

    Decided once for the whole file, from every chunk: a UTF-8 export with a few stray Latin-1
    bytes stays UTF-8 (the rows holding them are rejected by line, see `check_text`) instead of
    having every accented name garbled, and one Windows-typed byte at row 900,000 of an otherwise
    ASCII file still makes it Windows-1252, not a late failure. The same pass looks for control
    characters, so that a clean file (nearly every file) costs no check per row.
    """
    utf8 = codecs.getincrementaldecoder("utf-8-sig")("strict")
    multibyte = stray = 0  # bytes beyond the first of valid UTF-8 sequences; bytes that are not UTF-8
    controls = c1_utf8 = False
    cp1252_ok, first = True, True
    for chunk in chunks:
        if first and chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return Encoding("utf-16", check=True)  # Excel's "Unicode Text" export
        first = False
        # C0 controls and DEL are the same single bytes in all three encodings (never inside a UTF-8 sequence).
        controls = controls or bool(chunk.translate(None, _NOT_CONTROL_BYTES))
        if chunk.isascii() and not utf8.getstate()[0]:  # ASCII: same text in every candidate, 20x faster
            continue
        # A C1 control in UTF-8 (a split pair at the chunk's end counts as one: it only costs the row check).
        c1_utf8 = c1_utf8 or _C1_UTF8.search(chunk) is not None or chunk.endswith(b"\xc2")
        state = utf8.getstate()
        try:
            text = utf8.decode(chunk)
        except UnicodeDecodeError:
            utf8.setstate(state)
            text, bad = _decode_stray(utf8, chunk)
            stray += bad
        multibyte += len(chunk) - len(text)
        if cp1252_ok and chunk.translate(None, _NOT_CP1252_UNDEFINED):
            cp1252_ok = False
    stray += _decode_stray(utf8, b"", final=True)[1]
    if stray == 0 or multibyte > stray:
        return Encoding("utf-8-sig", check=controls or c1_utf8 or stray > 0)
    if cp1252_ok:
        return Encoding("cp1252", check=controls or multibyte > 0)
    return Encoding("latin-1", check=True)  # its bytes cp1252 lacks are C1 controls


def _decode_stray(decoder: codecs.IncrementalDecoder, chunk: bytes, *, final: bool = False) -> tuple[str, int]:
    """Decode keeping bytes that are not UTF-8 as lone surrogates (PEP 383); (text, how many)."""
    decoder.errors = "surrogateescape"
    try:
        text = decoder.decode(chunk, final)
    finally:
        decoder.errors = "strict"
    return text, len(_STRAY.findall(text))


def is_binary(sample: bytes) -> bool:
    """NUL bytes never occur in a text export (UTF-16, which has them, is recognised by its BOM)."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in sample


def detect_delimiter(sample: str) -> str:
    """`,` `;` or tab: csv.Sniffer on whole lines, checked against the header line.

    The Sniffer can pick a character that only occurs in the data; the header (normally free of
    quotes) is the better witness, so it overrules the Sniffer then, and `,` is the last resort.
    """
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1:
        lines = lines[:-1]  # the sample may end mid-line
    header = lines[0] if lines else ""
    try:
        sniffed = csv.Sniffer().sniff("".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and (sniffed in header or not any(d in header for d in DELIMITERS)):
        return sniffed
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def check_text(values: list[str], encoding: str) -> tuple[int, str] | None:
    """(index, reason) of the first cell a recipient must not carry, or None (the common case, fast).

    Refused: control characters (see `_UNFIT`), bytes that are not UTF-8 in a UTF-8 file, and,
    in a file read as Windows-1252/Latin-1, a cell that is UTF-8 text (it would show as `JÃ¼rgen`).
    """
    joined = "".join(values)
    suspect = _UNFIT.search(joined) is not None
    if not suspect and (encoding.startswith("utf") or joined.isascii()):
        return None
    label = _LABELS.get(encoding, encoding)
    for index, value in enumerate(values):
        found = _UNFIT.search(value)
        if found and _STRAY.match(found.group()):
            byte = ord(found.group()) - 0xDC00
            return index, f"byte 0x{byte:02X} is not {label}, unlike the rest of the file (fix its encoding)"
        if found:
            return index, f"contains control character U+{ord(found.group()):04X}"
        if not encoding.startswith("utf") and _is_utf8_text(value, encoding):
            return index, f"holds UTF-8 text, unlike the rest of the file (read as {label}): fix its encoding"
    return None


def _is_utf8_text(value: str, encoding: str) -> bool:
    """True if this cell's bytes (as read with `encoding`) are non-ASCII UTF-8: mojibake waiting to happen."""
    if value.isascii():
        return False
    try:
        value.encode(encoding).decode("utf-8")
    except UnicodeError:
        return False
    return True


def shown(value: str, encoding: str = "utf-8") -> str:
    """A cell as a person should see it in the rejects file, where it waits to be fixed: its
    likeliest intent. A byte that is not UTF-8 reads as Windows-1252, and UTF-8 text in a file
    read as Windows-1252 or Latin-1 as UTF-8."""
    if not encoding.startswith("utf") and _is_utf8_text(value, encoding):
        return value.encode(encoding).decode("utf-8")
    if not _STRAY.search(value):
        return value
    return _STRAY.sub(lambda m: bytes([ord(m.group()) - 0xDC00]).decode("cp1252", errors="replace"), value)


def normalize_row(values: list[str], columns: Columns, check: str | None = "utf-8") -> tuple | None:
    """(email, first, last, company, custom_subject, custom_body, attachments, template, fields_json,
    timezone); None for a blank row. `attachments` and `template` are the cells as written;
    `_RowChecks` checks them against the files and the campaign's templates.

    `check`: the file's encoding for `check_text`, or None when the file scan found nothing to check.

    Raises:
        InvalidRow: a cell with control characters or undecodable bytes; cells past the header's
            width (never dropped in silence); no address, one email-validator refuses, or one with
            non-ASCII before the @-sign.
    """
    row = columns.padded(values)
    raw, first, last, company, subject, body, files, template, zone = columns.recipient_values(row)
    raw = raw.strip()
    if not raw and not "".join(values).strip():
        return None
    problem = check_text(values, check) if check else None
    if problem is not None:
        raise InvalidRow(*problem)
    width = len(columns.header)
    if len(values) > width and "".join(values[width:]).strip():
        raise InvalidRow(width, too_many_cells(len(values), width, columns.delimiter))
    if not raw:
        raise InvalidRow(columns.email, "empty email")
    try:
        email = normalize_email(raw)
    except EmailNotValidError as err:
        raise InvalidRow(columns.email, str(err)) from None
    if not email.isascii():  # the ASCII form exists whenever the part before the @-sign is ASCII
        local = email.rpartition("@")[0]
        chars = "".join(dict.fromkeys(c for c in local if not c.isascii()))
        raise InvalidRow(columns.email, f"non-ASCII characters before the @-sign ({chars}) need SMTPUTF8"
                                        " (RFC 6531), which Amazon SES does not support: it can never be sent")
    zone = zone.strip()
    if zone and not known_zone(zone):
        raise InvalidRow(columns.positions["timezone"], f"unknown time zone {zone!r}: use an IANA name such as "
                                                        "Europe/Berlin or America/New_York")
    return (email, first.strip(), last.strip(), company.strip(),
            subject.strip() or None, body.strip() or None, files.strip() or None, template.strip() or None,
            columns.fields_json(row), zone)


_DELIMITER_NAMES = {",": "a comma", ";": "a semicolon", "\t": "a tab"}


def too_many_cells(cells: int, width: int, delimiter: str) -> str:
    """Why a row wider than its header is refused: its cells past the header have no column to go
    to, and the usual cause is an unquoted delimiter in a value (`Acme, Inc`) shifting the rest."""
    return (f"{cells} cells for {width} columns: a value with {_DELIMITER_NAMES.get(delimiter, repr(delimiter))}"
            " must be in double quotes")


@lru_cache(maxsize=None)
def known_zone(name: str) -> bool:
    """An IANA time zone name the system's tz database knows (each name is looked up once)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def rejects_target(path: Path, rejects_path: str | Path | None) -> Path:
    """`<stem>.rejects.csv` beside the input, or in the working directory if that folder is read-only."""
    if rejects_path is not None:
        return Path(rejects_path)
    name = f"{path.stem}.rejects.csv"
    folder = path.parent
    return folder / name if os.access(folder, os.W_OK) else Path.cwd() / name


def _refuse_rejects_over_own_files(path: Path, rejects_path: str | Path | None) -> None:
    """The rejects file replaces its target at the end: never the user's own list, nor a database."""
    target = rejects_target(path, rejects_path)
    if target.is_file() and os.path.samefile(target, path):
        raise CsvImportError(f"{path}: --rejects {rejects_path} is the file being imported; name another file")
    if is_database_file(target):
        raise CsvImportError(f"{path}: --rejects {rejects_path} is a database file; name another file")


# --- I/O ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    encoding: Encoding
    delimiter: str
    size: int


def _inspect(path: Path) -> _Source:
    """Refuse files that cannot be an import, before the write lock is taken."""
    try:
        with open(path, "rb") as f:
            sample = f.read(SAMPLE_BYTES)
            size = os.fstat(f.fileno()).st_size
            if is_binary(sample):
                raise CsvImportError(f"{path}: not a text file (binary content)")
            f.seek(0)
            encoding = detect_encoding(iter(lambda: f.read(1 << 20), b""))
    except OSError as err:
        raise CsvImportError(f"{path}: cannot read file: {err.strerror or err}") from err
    text = sample.decode(encoding.name, errors="ignore")  # errors: a sample may end mid-character
    if not text.lstrip("\ufeff").strip():
        raise CsvImportError(f"{path}: file is empty")
    return _Source(encoding, detect_delimiter(text.lstrip("\ufeff")), size)


class _Records:
    """The file's records, and the physical line each starts on (a quoted cell may span lines); a
    malformed record becomes an error naming that line.

    The header is read through `__iter__`; `_load` reads the rest from `reader` itself, keeping
    `end` in a local (a generator's step per row was a twentieth of the row's Python time).
    """

    def __init__(self, path: Path, text: io.TextIOBase, delimiter: str) -> None:
        self.path = path
        self.reader = csv.reader(text, delimiter=delimiter, strict=True)
        self.end = 0  # the line the last record read ended on

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        """(line the record starts on, values)."""
        with self.errors(lambda: self.end):
            for values in self.reader:
                start, self.end = self.end + 1, self.reader.line_num
                yield start, values

    @contextmanager
    def errors(self, end: Callable[[], int]) -> Iterator[None]:
        """CsvImportError for a record that cannot be read; `end()`: the line the last good one ended on."""
        try:
            yield
        except csv.Error as err:
            raise CsvImportError(f"{self.path}:{end() + 1}: malformed CSV: {err}") from err
        except UnicodeDecodeError as err:  # only if the file changed since its encoding was detected
            raise CsvImportError(f"{self.path}:{end() + 1}: cannot decode text: {err.reason}") from err


class _RejectsFile:
    """Invalid rows as they were, plus line, field and reason; formula-safe, so that a cell such as
    `=HYPERLINK(...)` opens as text in a spreadsheet. Written to a temporary file that replaces the
    target only on success."""

    def __init__(self, target: Path, header: list[str], delimiter: str, encoding: str) -> None:
        self.target, self.header, self.delimiter, self.encoding = target, header, delimiter, encoding
        self._file = self._writer = None
        self._temp: Path | None = None

    def write(self, values: list[str], reject: Reject) -> None:
        """The row's cells under their headers, then line, field and reason in theirs; cells past
        the header (a row refused for them) follow at the end, so that nothing is lost."""
        if self._writer is None:
            self._open()
        width = len(self.header)
        cells = [csv_safe(shown(v, self.encoding)) for v in values]
        self._writer.writerow(cells[:width] + [""] * (width - len(cells))
                              + [reject.line, reject.field, reject.reason] + cells[width:])

    def _open(self) -> None:
        self._temp = self.target.with_name(f".{self.target.name}.{os.getpid()}.tmp")
        try:
            self._file = open(self._temp, "w", encoding="utf-8-sig", newline="")
        except OSError as err:
            raise CsvImportError(f"{self.target}: cannot write rejects file: {err.strerror or err}") from err
        # utf-8-sig: Excel then shows accents right; the input's delimiter matches the user's locale.
        self._writer = csv.writer(self._file, delimiter=self.delimiter)
        self._writer.writerow([csv_safe(shown(h, self.encoding)) for h in self.header] + ["line", "field", "reason"])

    def commit(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        try:
            os.replace(self._temp, self.target)
        except OSError as err:
            raise CsvImportError(f"{self.target}: cannot write rejects file: {err.strerror or err}") from err
        return self.target

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._temp.unlink(missing_ok=True)


def import_csv(
    conn: sqlite3.Connection,
    path: str | Path,
    *,
    campaign: str = DEFAULT_CAMPAIGN,
    rejects_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    domain_check: Callable[[str], str | None] | None = None,
    attachments_dir: str | Path | None = None,
    max_message_bytes: int = attachments.DEFAULT_MAX_MESSAGE_BYTES,
) -> ImportReport:
    """Add the file's recipients to `campaign` (created if new), all or nothing, `chunk_rows` per transaction.

    Duplicates (within the file or already in the campaign) are skipped and counted; invalid rows
    are counted and written to a rejects CSV (see `rejects_target`) with `line`, `field` and
    `reason` columns. `progress(n)` is called with the number of bytes read since its previous
    call; the calls add up to the file size, so a bar with total=file size ends full.
    `domain_check(domain)` (CHECK_MX, see mx_check.py) names a domain that cannot receive mail:
    its rows are rejected with that reason. The files of an `attachments` column are found in
    `attachments_dir` (default: the CSV's folder) and checked (see attachments.py); a row whose
    files cannot be sent, with the campaign's own files within `max_message_bytes`, is rejected, and
    so is a row whose templates (its named one or the campaign's own, and their follow-up steps)
    read a CSV column the file lacks (template_columns.py, worked out once for the file).

    Raises:
        CsvImportError: the file cannot be imported; no recipient was added.
        imports.ImportBusyError: another import into this database is running.
    """
    path = Path(path)
    source = _inspect(path)
    _refuse_rejects_over_own_files(path, rejects_path)
    report = ImportReport(campaign=campaign)
    meter = _Meter(progress)
    own = conn.execute("SELECT attachments FROM campaigns WHERE name = ?", (campaign,)).fetchone()
    names = frozenset(row[0] for row in conn.execute(
        "SELECT t.name FROM templates t JOIN campaigns c ON c.id = t.campaign_id WHERE c.name = ?", (campaign,)))
    reads = template_columns.template_reads(conn, campaign)
    shared = attachments.stored_paths(own[0] if own else None)
    files = attachments.CellChecker(Path(attachments_dir) if attachments_dir else path.parent, max_bytes=max_message_bytes,
                                    extra=attachments.encoded_total(shared), shared=shared)
    with imports.import_lock(conn) as held:
        if not held:
            raise imports.ImportBusyError(
                f"{path}: another import into this database is running; import this file when it has finished")
        imports.clean_up_interrupted(conn)
        try:
            with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding=source.encoding.name, errors="surrogateescape",
                                                           newline="") as text:
                records = _Records(path, text, source.delimiter)
                header = next((values for _, values in records if "".join(values).strip()), None)
                if header is None:  # only blank lines or bare delimiters
                    raise CsvImportError(f"{path}: file is empty")
                columns = map_header([shown(h, source.encoding.name) for h in header], source.delimiter)
                report.renamed = columns.renamed
                if columns.email is None:
                    found = ", ".join(_UNFIT.sub("?", h.strip()) for h in columns.header)  # no ESC to the terminal
                    raise CsvImportError(f"{path}: no email column (found: {found})")
                rejects = _RejectsFile(rejects_target(path, rejects_path), header, source.delimiter, source.encoding.name)
                lacking = template_columns.missing_columns(reads, {key for _, key in columns.extras})
                if None in lacking and "template" not in columns.positions:  # every row gets the campaign's own
                    column, by = lacking[None]
                    raise CsvImportError(f"{path}: {by} reads {{{{ {column} }}}} and this file has no {column!r} "
                                         "column, so no row of it can be sent; add the column (an empty cell is "
                                         "fine) or change the template")
                _run(conn, records, columns, rejects, report, source.encoding, str(path), lambda: meter.at(raw.tell()),
                     chunk_rows, _RowChecks(domain_check, files, campaign, names, lacking))
        except OSError as err:
            raise CsvImportError(f"{path}: cannot read file: {err.strerror or err}") from err
    meter.at(source.size)
    return report


def _run(conn: sqlite3.Connection, records: _Records, columns: Columns,
         rejects: _RejectsFile, report: ImportReport, encoding: Encoding, file: str, tick: Callable[[], None],
         chunk_rows: int, checks: _RowChecks) -> None:
    """The import proper: begin, load in chunks, then commit the rejects file and flip to done together."""
    run = None
    try:
        with _import_pragmas(conn):
            run = imports.begin(conn, report.campaign, file)
            _load(conn, run, records, columns, encoding.name if encoding.check else None, rejects, report, tick,
                  chunk_rows, checks)
        # With the connection's own `synchronous` again (FULL): this commit syncs the log up to
        # here, and with it every chunk before it (https://www.sqlite.org/wal.html).
        with transaction(conn):
            report.rejects_file = rejects.commit()
            imports.finish(conn, run, inserted=report.inserted, duplicates=report.duplicates,
                           invalid=report.invalid)
    except BaseException as err:
        rejects.discard()
        if run is not None:
            _abandon(conn, run, err)
        raise


def _abandon(conn: sqlite3.Connection, run: imports.ImportRun, err: BaseException) -> None:
    """Remove a failed import's rows now if the database lets us; if not, they stay invisible and
    the next import (or `init`) removes them."""
    reason = "interrupted" if isinstance(err, KeyboardInterrupt) else (str(err) or type(err).__name__)
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        imports.fail(conn, run.id, reason)
    except sqlite3.Error:
        pass


class _Meter:
    """Turns file positions into the byte increments `progress` expects."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.done = progress, 0

    def at(self, position: int) -> None:
        if self.progress and position > self.done:
            self.progress(position - self.done)
            self.done = position


def _load(conn: sqlite3.Connection, run: imports.ImportRun, records: _Records,
          columns: Columns, check: str | None, rejects: _RejectsFile, report: ImportReport,
          tick: Callable[[], None], chunk_rows: int, checks: _RowChecks) -> None:
    """Stream rows into the database, one short transaction per `chunk_rows` valid rows.

    INSERT OR IGNORE skips an address already in the campaign, whether from an earlier import or
    an earlier chunk of this one (imports take turns, so no other import's rows are in the way):
    duplicates are the valid rows it did not insert.
    """
    shared = (run.campaign_id, run.id, iso(utc_now()))
    statement_rows = _statement_rows(conn, len(columns.stored))
    build = _row_function(columns, check, checks)
    chunk: list[tuple] = []
    valid = 0
    reader, end = records.reader, records.end
    with records.errors(lambda: end):
        for values in reader:
            line, end = end + 1, reader.line_num
            try:
                recipient = build(values)
            except InvalidRow as err:
                _reject(report, rejects, line, values, columns, err)
                continue
            if recipient is None:
                continue
            chunk.append(recipient)
            if len(chunk) == chunk_rows:
                report.inserted += _insert(conn, shared, columns.stored, chunk, statement_rows)
                valid += len(chunk)
                chunk = []
                tick()
    if chunk:
        report.inserted += _insert(conn, shared, columns.stored, chunk, statement_rows)
        valid += len(chunk)
    report.duplicates = valid - report.inserted


def _row_function(columns: Columns, check: str | None, checks: _RowChecks) -> import_rows.Row:
    """values -> the row's `columns.stored` values (None for a blank row): written for the file's
    columns (import_rows.py), or the general path alone when the file scan found cells to check."""
    def general(values: list[str]) -> tuple | None:
        recipient = checks(normalize_row(values, columns, check), columns)
        return None if recipient is None else columns.stored_values(recipient)

    if check is not None or None in checks.lacking:  # the campaign's own template needs a column: its rows refused
        return general
    return import_rows.row_builder(columns, general, checks.domain_check)


@dataclass
class _RowChecks:
    """The checks of a valid row that look outside the file: its domain's MX (CHECK_MX), its files
    and its template (one of the campaign's named templates, or `default` for the campaign's own),
    which must read no column the file lacks (`lacking`: template_columns.missing_columns)."""

    domain_check: Callable[[str], str | None] | None
    files: Callable[[str], str | None]
    campaign: str = DEFAULT_CAMPAIGN
    templates: frozenset[str] = frozenset()
    lacking: dict[str | None, tuple[str, str]] = field(default_factory=dict)

    def __call__(self, recipient: tuple | None, columns: Columns) -> tuple | None:
        """The row to insert, its `attachments` cell replaced by the files' absolute paths.

        Raises:
            InvalidRow: the domain cannot receive mail, a file cannot be sent, the template is unknown
                or reads a column the file lacks.
        """
        if recipient is None:
            return None
        undeliverable = self.domain_check(recipient[0].rpartition("@")[2]) if self.domain_check else None
        if undeliverable:
            raise InvalidRow(columns.email, undeliverable)
        email, first, last, company, subject, body, files, template, fields, zone = recipient
        if template is not None and template.lower() == DEFAULT_TEMPLATE:
            template = None
        if template is not None and template not in self.templates:
            known = ", ".join(sorted(self.templates)) or "none"
            raise InvalidRow(columns.positions["template"], f"campaign {self.campaign!r} has no template {template!r} "
                                                           f"(it has: {known}); add it with `template add` first")
        if template in self.lacking:
            column, by = self.lacking[template]
            raise InvalidRow(columns.email, f"{by} reads {{{{ {column} }}}} and this file has no {column!r} column; "
                                            "add the column (an empty cell is fine) or change the template", column)
        try:
            files = self.files(files) if files is not None else None
        except attachments.AttachmentError as err:
            raise InvalidRow(columns.positions["attachments"], str(err)) from None
        return (email, first, last, company, subject, body, files, template, fields, zone)


def _insert(conn: sqlite3.Connection, shared: tuple, stored: tuple[str, ...], rows: list[tuple],
            statement_rows: int) -> int:
    """One write transaction: the rows (values of the `stored` columns) in multi-row INSERT
    statements; returns how many were new."""
    inserted = 0
    with transaction(conn):
        for start in range(0, len(rows), statement_rows):
            part = rows[start:start + statement_rows]
            params = [*shared]
            for row in part:
                params += row
            inserted += conn.execute(_insert_sql(stored, len(part)), params).rowcount
    return inserted


def _statement_rows(conn: sqlite3.Connection, row_params: int) -> int:
    """Rows per statement: STATEMENT_ROWS, or fewer if this SQLite allows fewer bound parameters."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(STATEMENT_ROWS, (limit - _SHARED_PARAMS) // row_params))


@lru_cache(maxsize=4)
def _insert_sql(stored: tuple[str, ...], rows: int) -> str:
    """INSERT OR IGNORE of `rows` recipients in one statement; the rows it ignores are the in-file
    and earlier duplicates. The columns the file lacks take the table's defaults."""
    first = _SHARED_PARAMS + 1
    slots = [f"nullif(?{{}},'')" if name in _NULL_WHEN_EMPTY else "?{}" for name in stored]
    values = (
        "(?1,?2,?3," + ",".join(slot.format(first + n * len(stored) + k) for k, slot in enumerate(slots)) + ")"
        for n in range(rows)
    )
    return (f"INSERT OR IGNORE INTO recipients (campaign_id, import_id, created_at, {', '.join(stored)}) VALUES "
            + ",".join(values))


def _reject(report: ImportReport, rejects: _RejectsFile, line: int, values: list[str],
            columns: Columns, err: InvalidRow) -> None:
    column = err.column
    name = err.field or (columns.header[column].strip() if column < len(columns.header) else "")
    reject = Reject(line, name or f"column {column + 1}", str(err))
    report.invalid += 1
    if len(report.rejects) < MAX_REJECTS_IN_MEMORY:
        report.rejects.append(reject)
    rejects.write(values, reject)


@contextmanager
def _import_pragmas(conn: sqlite3.Connection) -> Iterator[None]:
    """Settings for the import only, restored after.

    A bigger page cache: the email and company indexes take random inserts, and in the default 2 MiB
    each one rereads and rewrites pages; 64 MiB holds what a chunk of CHUNK_ROWS dirties (one
    transaction of 1M rows into `recipients`: 23.6 s with 2 MiB, 18.6 s with 16, 16.8 s with 64,
    16.6 s with 256; https://www.sqlite.org/pragma.html#pragma_cache_size). No foreign-key check per
    row (15% of the insert time, measured by benchmarks/bench_import.py): every row takes the
    campaign id `imports.begin` has just read or created, and no command deletes a campaign.
    PRAGMA foreign_keys cannot change inside a transaction (https://www.sqlite.org/pragma.html#pragma_foreign_keys),
    and there is none open between the import's chunks. And synchronous=NORMAL: in WAL mode a
    commit then skips its fsync and stays atomic; a chunk lost to a power cut belongs to an import
    that is not `done`, so it is invisible and cleaned up like any interrupted import.

    And temp_store=MEMORY: each multi-row INSERT keeps a statement journal, the original of every
    page it changes so that it alone can be undone (SQLite keeps one for this table: its company
    indexes hold expressions), and past 64 KiB that journal goes to a temporary file: 120,000
    writes for 200,000 rows, a seventh of the import's time
    (https://www.sqlite.org/tempfiles.html#statement_journal_files). In memory it holds one
    statement's pages at most, about 4 MiB. The connection has no TEMP table for the switch to
    drop (https://www.sqlite.org/pragma.html#pragma_temp_store).
    """
    saved = {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
             for name in ("cache_size", "foreign_keys", "synchronous", "temp_store")}
    conn.execute(f"PRAGMA cache_size = {-PAGE_CACHE_MIB * 1024}")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    try:
        yield
    finally:
        for name, value in saved.items():
            conn.execute(f"PRAGMA {name} = {int(value)}")
