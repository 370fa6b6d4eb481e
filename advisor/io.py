"""Reading learning curves from CSV files (long or wide), with errors that name the problem."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

__all__ = ["CurveFileError", "read_curves"]

# Columns of names, read as text: a run called "NA", "null" or "007" is that run, not a missing
# value or the number 7. Other columns keep pandas' missing-value spellings (listed in
# pandas.read_csv's documentation).
_TEXT_COLUMNS = ("run_id", "task", "metric")
_MISSING = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
            "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


class CurveFileError(ValueError):
    """A curves file cannot be used; the message names the file, the column and what's expected."""


def read_curves(path: str | Path, numeric: Iterable[str | None] = ()) -> pd.DataFrame:
    """Read a curves CSV (plain or ``.gz``) in long or wide format and check its columns.

    Long: ``run_id``, ``epoch`` or ``step``, ``metric``, ``value``, optional ``task`` (as in the
    shared curves). Wide: ``epoch`` and/or ``step`` and one numeric column per metric (as
    Lightning's ``CSVLogger`` writes ``metrics.csv``), optional ``run_id``. ``numeric`` names
    further columns that must hold numbers where present (in a wide file, the metrics judged).
    Names (``run_id``, ``task``, ``metric``) are read as text. Every error names the file, and
    the line where one is to blame.
    """
    path = Path(path)
    if path.is_dir():
        raise CurveFileError(f"{path}: is a directory, not a curves file.")
    if not path.is_file():
        raise CurveFileError(f"{path}: no such file.")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        frame = pd.read_csv(path, low_memory=False, keep_default_na=False,
                            dtype={c: str for c in _TEXT_COLUMNS if c in header},
                            na_values={c: _MISSING for c in header if c not in _TEXT_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            EOFError, zlib.error) as exc:  # EOFError, zlib.error: a cut or damaged .gz
        raise CurveFileError(f"{path}: not a readable CSV file ({exc}).") from exc
    if frame.empty:
        raise CurveFileError(f"{path}: has no rows.")
    columns = set(frame.columns)
    if not columns & {"epoch", "step"}:
        raise CurveFileError(f"{path}: needs an 'epoch' or 'step' column; found columns "
                             f"{sorted(columns)}.")
    long = {"metric", "value"} <= columns
    steps = [c for c in ("epoch", "step") if c in columns]
    judged = [] if long else [c for c in numeric if c in columns and c not in steps]
    for column in steps + (["value"] if long else []) + judged:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if column in steps:  # "inf", "1e400": not a place on an axis
            bad |= values.abs() == math.inf
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2  # 1-based, after the header
            what = "finite numbers" if column in steps else "numbers"
            value = frame[column][bad].iloc[0]
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            raise CurveFileError(f"{path}: column {column!r} must hold {what}, but line {row} "
                                 f"has {shown}.")
        frame[column] = values
    if long and "run_id" not in columns:
        raise CurveFileError(f"{path}: long format (metric, value) needs a 'run_id' column; "
                             f"found columns {sorted(columns)}.")
    for column in ("run_id", "metric") if long else ("run_id",):
        if column in columns:
            empty = (frame[column].str.strip() == "").to_numpy()
            if empty.any():
                raise CurveFileError(f"{path}: column {column!r} must name every row, but line "
                                     f"{int(empty.nonzero()[0][0]) + 2} has none "
                                     f"({int(empty.sum())} such row(s)).")
    return frame
