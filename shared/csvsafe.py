"""Spreadsheet-safe CSV cells (OWASP's CSV injection rule).

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a
formula by Excel, LibreOffice and Google Sheets: a file named `=cmd|' /C calc'!A0.png`
would be one. Such a cell gets a leading single quote, which spreadsheets show as text
and do not display. Only text cells are touched: numbers we write are never negative,
and JSON keeps every value exactly as stored.

defusedcsv does the same by wrapping the csv module; it also rewrites `|` and `%` and
escapes inside the cell, so a file name would read differently from the JSON. The rule
is three lines, so it lives here, used by the API's CSV and the client's alike.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """The value, or a text value that cannot start a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def row(values) -> list:
    return [cell(v) for v in values]
