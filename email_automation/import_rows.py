"""The CSV import's row function, written for one file's columns: the Python half of a big import.

A million-row import ran `normalize_row` for every row: a padded copy of the row, nine cells
picked and trimmed, the address through email-validator's fast path, the template, file and time
zone checks, the extra columns as JSON, then the values for the INSERT picked again (6.3 µs a
row, more than the whole baseline of csv.reader + executemany). Most files hold rows of one
shape, so this module writes, once per file, a function that does only what that file's columns
need, in straight-line code (as `collections.namedtuple` and `dataclasses` write their methods):

    def build(values):
        if len(values) != 5:
            return general(values)
        email = plain_form(values[0].strip())
        if email is None:
            return general(values)
        return (email, values[1].strip(), values[2].strip(), values[3].strip(),
                "".join((_key0, quote(values[4].strip()), "}")))

It stands aside, giving the row to `general` (the import's full path, which knows the exact
reason of any refusal), for whatever is not plain: a row narrower or wider than the header, an
address `plain_form` does not take, a domain CHECK_MX refuses, and a template, attachment or time
zone cell that needs looking up. Only names, numbers and constants of this module go into the
source; header names and cells stay data. tests/test_import_csv.py compares both paths on
generated files.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring
from typing import TYPE_CHECKING

from .addresses import plain_form

if TYPE_CHECKING:
    from .import_csv import Columns

Row = Callable[[list[str]], "tuple | None"]

# Cells a row's checks look up (files, the campaign's templates, the tz database): a row with one
# of them filled in takes the general path.
LOOKED_UP = frozenset({"attachments", "template", "timezone"})


def row_builder(columns: Columns, general: Row, domain_check: Callable[[str], str | None] | None = None) -> Row:
    """values -> the row's `columns.stored` values, as `general` would give them; None for a blank row.

    Raises:
        InvalidRow: through `general`, for a row that cannot be imported.
    """
    namespace = {"general": general, "plain_form": plain_form, "quote": encode_basestring,
                 "domain_check": domain_check}
    source = _source(columns, namespace, checks_domain=domain_check is not None)
    exec(compile(source, f"<import row of {len(columns.header)} columns>", "exec"), namespace)  # noqa: S102
    return namespace["build"]


def _source(columns: Columns, namespace: dict, *, checks_domain: bool) -> str:
    """The function's text; the JSON keys of the extra columns go into `namespace`, not the text."""
    lines = [f"if len(values) != {len(columns.header)}:", "    return general(values)",
             f"email = plain_form(values[{columns.email}].strip())", "if email is None:", "    return general(values)"]
    if checks_domain:
        lines += ["if domain_check(email.rpartition('@')[2]) is not None:", "    return general(values)"]
    values = ["email"]
    for name in columns.stored[1:]:
        if name == "fields":
            values.append(_fields_json(columns.json_pairs, namespace))
            continue
        cell = f"values[{columns.positions[name]}].strip()"
        if name in LOOKED_UP:
            lines += [f"if {cell}:", "    return general(values)"]
            values.append('""')
        else:
            values.append(cell)
    lines.append(f"return ({', '.join(values)},)")
    return "def build(values):\n" + "".join(f"    {line}\n" for line in lines)


def _fields_json(json_pairs: tuple[tuple[int, str], ...], namespace: dict) -> str:
    """The expression of the extra columns as one JSON object, the way `Columns.fields_json` writes it
    (its `json_pairs`: each column's index and JSON key)."""
    parts = []
    for number, (index, key) in enumerate(json_pairs):
        namespace[f"_key{number}"] = ("{" if number == 0 else ",") + key
        parts += [f"_key{number}", f"quote(values[{index}].strip())"]
    # One flat join, not a chain of `+`: a chain as deep as a wide file's columns does not compile.
    return f'"".join(({", ".join(parts)}, "}}"))'
