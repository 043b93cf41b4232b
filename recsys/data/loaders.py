"""Readers for every registered file format, and :func:`load_dataset`.

Every reader returns the interaction table of :mod:`recsys.data.schema` in file order. Files are
parsed by pandas' C engine with explicit dtypes (delimited files in chunks of :data:`_CHUNK_ROWS`
rows); only when that fails (or a check on its result does) is the file scanned line by line, to
name the first bad line in a :class:`DataError`. So bad input costs one extra pass and good input
none.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Literal, Mapping

import numpy as np
import pandas as pd

from recsys.data.download import Source, locate
from recsys.data.registry import Dataset, DatasetInfo, get_info
from recsys.data.schema import ITEM, ORDER, RATING, TIMESTAMP, USER
from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError, DataError

_OUR_COLUMNS = (USER, ITEM, RATING, TIMESTAMP, ORDER)
_EPOCH = pd.Timestamp(0, tz="UTC")


# --------------------------------------------------------------------------- delimited tables


@dataclass(frozen=True)
class _Table:
    """How to read one delimited file.

    ``columns`` maps our column names to the file's 0-based positions or header names;
    ``n_fields`` is the exact number of fields per line (None: as many as the header or the
    first line has); ``optional`` columns may be empty (NaN); ``dates`` lets ``timestamp`` hold
    ISO-8601 dates instead of unix seconds.
    """

    sep: str
    columns: Mapping[str, int | str]
    n_fields: int | None = None
    header: bool = False
    ids: Literal["int", "str", "infer"] = "int"
    optional: frozenset[str] = frozenset()
    dates: bool = False


def _sep_words(sep: str) -> str:
    return {"\t": "tabs", r"\s+": "whitespace", " ": "spaces"}.get(sep, repr(sep))


def _splitter(sep: str) -> Callable[[str], list[str]]:
    if sep == r"\s+":
        return str.split
    if len(sep) == 1:
        return lambda line: next(csv.reader([line], delimiter=sep))
    return lambda line: re.split(sep, line)


def _short(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


def _text_lines(src: Source) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for every non-blank line."""
    with src.open() as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as text:
        for number, line in enumerate(text, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


Problems = Callable[[Iterator[tuple[int, str]]], Iterator[tuple[int, str]]]
"""Turns (line number, line) pairs into (line number, what is wrong) pairs."""


def _first_problem(src: Source, label: str, problems: Problems) -> DataError | None:
    """DataError naming the first line ``problems`` objects to, or None."""
    for number, problem in problems(_text_lines(src)):
        return DataError(f"{label} line {number}: {problem} (file {src.label})")
    return None


def _scan(src: Source, label: str, problems: Problems, err: Exception | str) -> DataError:
    """DataError for the first bad line, or a generic one naming ``err`` if no line is at fault."""
    return _first_problem(src, label, problems) or DataError(
        f"{label}: could not be read ({err}) (file {src.label})")


def _value_problem(col: str, value: str, spec: _Table) -> str | None:
    value = value.strip()
    if not value:
        return None if col in spec.optional else f"{col} is empty"
    integer = col == ORDER or (col in (USER, ITEM) and spec.ids == "int")
    try:
        if integer:
            int(value)
        elif col not in (USER, ITEM):
            float(value)
        return None
    except ValueError:
        if col == TIMESTAMP and spec.dates:
            if pd.notna(pd.to_datetime(value, errors="coerce", format="ISO8601")):
                return None
            return f"{col} must be a number or an ISO-8601 date, got {value!r}"
        return f"{col} must be {'an integer' if integer else 'a number'}, got {value!r}"


def _table_problems(spec: _Table, positions: Mapping[str, int]) -> Problems:
    split = _splitter(spec.sep)
    needed = max(positions.values()) + 1

    def problems(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        expected = spec.n_fields
        if spec.header:
            _, first = next(lines, (0, ""))
            expected = expected or len(split(first))
        for number, line in lines:
            fields = split(line)
            expected = max(expected or len(fields), needed)
            if len(fields) != expected:
                yield number, (f"expected {expected} fields separated by {_sep_words(spec.sep)}, "
                               f"got {len(fields)}: {_short(line)!r}")
                continue
            for col, pos in positions.items():
                problem = _value_problem(col, fields[pos], spec)
                if problem:
                    yield number, problem
                    break

    return problems


def _header(src: Source, spec: _Table, label: str) -> list[str]:
    for _, line in _text_lines(src):
        return [name.strip() for name in _splitter(spec.sep)(line)]
    raise DataError(f"{label} is empty (file {src.label})")


def _looks_like_data(names: list[str]) -> bool:
    """Whether a first line reads as a data row: a field is a number, or several look like ids."""
    def number(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    return any(number(n) for n in names) or sum(any(c.isdigit() for c in n) for n in names) >= max(2, len(names) // 2)


def _positions(src: Source, spec: _Table, label: str) -> dict[str, int]:
    """Our column name -> 0-based field position, checking header names against the file."""
    if all(isinstance(v, int) for v in spec.columns.values()):
        return dict(spec.columns)
    names = _header(src, spec, label)
    missing = {ours: theirs for ours, theirs in spec.columns.items() if theirs not in names}
    if missing:
        listed = ", ".join(f"{theirs!r} (for {ours!r})" for ours, theirs in missing.items())
        hint = ""
        if _looks_like_data(names):
            hint = ("; the first line looks like data, not a header: name the columns by 0-based position "
                    "(--columns user=0,item=1,rating=2,timestamp=3) to read the file without a header")
        raise DataError(f"{label}: missing column {listed}; columns found: {names} (file {src.label}){hint}")
    return {ours: names.index(theirs) for ours, theirs in spec.columns.items()}


def _dtype(col: str, spec: _Table) -> str | None:
    if col in (USER, ITEM):
        return {"int": "int64", "str": "str", "infer": None}[spec.ids]
    if col == ORDER:
        return "int64"
    if col == TIMESTAMP and spec.dates:
        return None
    return "float64"


def _as(s: pd.Series, dtype: Any) -> pd.Series:
    """``s`` as ``dtype``, itself (not a copy) when it already is."""
    return s if s.dtype == dtype else s.astype(dtype)


def _ids(s: pd.Series, mode: str) -> pd.Series:
    if mode == "int" or (mode == "infer" and pd.api.types.is_integer_dtype(s)):
        return _as(s, np.int64)
    return s.astype("str")


def _seconds(s: pd.Series) -> pd.Series:
    """Unix seconds (float64) from numbers or ISO-8601 dates (naive dates are taken as UTC)."""
    if pd.api.types.is_numeric_dtype(s):
        return _as(s, np.float64)
    dt = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    return (dt - _EPOCH).dt.total_seconds()


def _no_rows(src: Source, label: str, spec: _Table) -> DataError:
    return DataError(f"{label} has no data rows (the file is empty or holds only a header); "
                     f"expected {_describe(spec)} (file {src.label})")


_CHUNK_ROWS = 4_000_000
"""Rows per ``read_csv`` chunk in :func:`_read_table`. Only one chunk is alive in pandas' full
width at a time; the chunks read so far are kept packed (:func:`_pack`), so reading costs about
one copy of the finished table (a single ``read_csv`` call holds its internal chunks and their
concatenation at once)."""


@dataclass
class _Packed:
    """One chunk of one column: the values in the narrowest dtype that gives them back exactly
    (int64 -> int32, float64 -> float32 or int32), and the dtype pandas parsed them as."""

    values: Any  # np.ndarray, or the parsed Series itself when it is not numeric
    dtype: Any


def _pack(s: pd.Series) -> _Packed:
    dtype = s.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf" or len(s) == 0:
        return _Packed(s, dtype)
    a = s.to_numpy()
    if dtype.kind in "iu":
        info = np.iinfo(np.int32)
        return _Packed(a.astype(np.int32) if info.min <= a.min() and a.max() <= info.max else a, dtype)
    bits = f"u{dtype.itemsize}"
    for narrow in (np.float32, np.int32):  # kept only if it gives back every bit (NaN, -0.0 included)
        with np.errstate(invalid="ignore", over="ignore"):
            small = a.astype(narrow)
        if np.array_equal(small.astype(dtype).view(bits), a.view(bits)):
            return _Packed(small, dtype)
    return _Packed(a, dtype)


def _unpack(parts: list[_Packed]) -> pd.Series:
    """The chunks of one column as one Series, as a single read would have parsed it; ``parts``
    is emptied as it goes, so each packed chunk is freed once copied."""
    if len({p.dtype for p in parts}) == 1 and all(isinstance(p.values, np.ndarray) for p in parts):
        out = np.empty(sum(len(p.values) for p in parts), parts[0].dtype)
        start = 0
        while parts:
            values = parts.pop(0).values
            out[start:start + len(values)] = values
            start += len(values)
        return pd.Series(out, copy=False)
    # Chunks parsed as different dtypes (or not numbers): pandas' common dtype, as one read gives.
    series = [p.values.reset_index(drop=True) if isinstance(p.values, pd.Series)
              else pd.Series(p.values.astype(p.dtype, copy=False), copy=False) for p in parts]
    parts.clear()
    return pd.concat(series, ignore_index=True) if len(series) > 1 else series[0]


def _read_table(src: Source, label: str, spec: _Table, chunk_rows: int | None = None) -> pd.DataFrame:
    """The file read ``chunk_rows`` (default :data:`_CHUNK_ROWS`) rows at a time; every chunk is
    checked as it comes, and the first fault found sends the whole file to :func:`_scan`, which
    names its first bad line (numbered from the top of the file, whichever chunk it was in)."""
    positions = _positions(src, spec, label)
    # pandas' fast C parser takes one-character separators only; '::' is read as ':' with an
    # empty field between real ones, which the checks below require to stay empty.
    sep, width = (":", 2) if spec.sep == "::" else (spec.sep, 1)
    dtype = {pos * width: _dtype(col, spec) for col, pos in positions.items()}
    kwargs: dict[str, Any] = dict(sep=sep, header=None, skiprows=1 if spec.header else 0,
                                  dtype={k: v for k, v in dtype.items() if v}, skip_blank_lines=True,
                                  engine="c" if len(sep) == 1 or sep == r"\s+" else "python",
                                  chunksize=chunk_rows or _CHUNK_ROWS)
    if spec.n_fields is None:
        kwargs["usecols"] = sorted(dtype)
    problems = _table_problems(spec, positions)
    required = [pos * width for col, pos in positions.items() if col not in spec.optional]
    parts: dict[str, list[_Packed]] = {col: [] for col in positions}
    fault: Exception | str | None = None
    try:
        with src.open() as f:
            for raw in pd.read_csv(f, **kwargs):
                if (spec.n_fields is not None and raw.shape[1] != spec.n_fields * width - (width - 1)) \
                        or raw[required].isna().any(axis=None) \
                        or (width == 2 and raw[raw.columns[1::2]].notna().any(axis=None)):
                    fault = "missing or extra fields"
                    break
                for col, pos in positions.items():
                    parts[col].append(_pack(raw[pos * width]))
                del raw
    except pd.errors.EmptyDataError:
        raise _no_rows(src, label, spec) from None
    except (pd.errors.ParserError, ValueError) as err:  # bad field count or value; UnicodeError too
        fault = err
    if fault is not None:
        raise _scan(src, label, problems, fault) from None
    if not parts[USER] or sum(len(p.values) for p in parts[USER]) == 0:
        raise _no_rows(src, label, spec)
    out: dict[str, pd.Series] = {}
    for col in positions:
        column = _unpack(parts.pop(col))
        if col in (USER, ITEM):
            column = _ids(column, spec.ids)
        elif col == TIMESTAMP:
            seconds = _seconds(column)
            if (seconds.isna() & column.notna()).any():
                raise _scan(src, label, problems, "unreadable dates")
            column = seconds
        out[col] = column
    return pd.DataFrame(out, copy=False)


def _describe(spec: _Table) -> str:
    return f"fields separated by {_sep_words(spec.sep)}" + (" with a header line" if spec.header else "")


def _table(**kwargs: Any) -> Callable[[Source, str], pd.DataFrame]:
    spec = _Table(**kwargs)
    return lambda src, label: _read_table(src, label, spec)


# --------------------------------------------------------------------------- sequences (S3-Rec)


def _token_ids(tokens: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(tokens, errors="coerce")
    if numbers.notna().all() and (numbers % 1 == 0).all():
        return numbers.astype(np.int64)
    return tokens.astype("str")


def _read_sequences(src: Source, label: str) -> pd.DataFrame:
    """'user item item ...' per line -> one row per item, ``order`` 0..n-1 in line order."""
    with src.open() as f:
        text = f.read().decode("utf-8", errors="replace")
    lines = pd.Series(text.splitlines(), dtype=object)
    tokens = lines.str.split()
    counts = tokens.str.len().to_numpy()
    if not (counts > 0).any():
        raise DataError(f"{label} is empty (file {src.label})")
    lonely = np.flatnonzero(counts == 1)
    if len(lonely):
        k = lonely[0]
        raise DataError(f"{label} line {k + 1}: expected a user id followed by item ids separated by "
                        f"spaces, got {_short(lines[k])!r} (file {src.label})")
    flat = tokens[counts > 0].explode()  # index = 0-based line number
    position = flat.groupby(level=0, sort=False).cumcount().to_numpy()
    users = flat[position == 0]
    repeated = users.duplicated(keep=False).to_numpy()
    if repeated.any():
        where = users.index[repeated][:2] + 1
        raise DataError(f"{label}: user {users[repeated].iloc[0]} appears on lines {where[0]} and "
                        f"{where[1]}; expected one line per user (file {src.label})")
    items = flat[position > 0]
    return pd.DataFrame({
        USER: _token_ids(users.loc[items.index]).to_numpy(),
        ITEM: _token_ids(items).to_numpy(),
        ORDER: position[position > 0] - 1,
    })


# --------------------------------------------------------------------------- Netflix Prize


class _Chain(io.RawIOBase):
    """One readable stream over several files, with a newline after each."""

    def __init__(self, paths: Iterable[Path]):
        self._parts = (p for path in paths for p in (path, None))
        self._current: BinaryIO | None = None
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._current is None:
                part = next(self._parts, False)
                if part is False:
                    return 0
                if part is None:
                    self._pending = b"\n"
                    break
                self._current = open(part, "rb")
            self._pending = self._current.read(len(buffer))
            if not self._pending:
                self._current.close()
                self._current = None
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


def _netflix_problems(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    seen_movie = False
    for number, line in lines:
        line = line.strip()
        if line.endswith(":"):
            seen_movie = True
            if not line[:-1].isdigit():
                yield number, f"movie header must be 'MovieID:', got {_short(line)!r}"
            continue
        fields = line.split(",")
        if not seen_movie:
            yield number, f"expected a 'MovieID:' line first, got {_short(line)!r}"
        elif len(fields) != 3:
            yield number, (f"expected 3 fields 'CustomerID,Rating,YYYY-MM-DD' separated by ',', "
                           f"got {len(fields)}: {_short(line)!r}")
        elif not fields[0].isdigit():
            yield number, f"CustomerID must be an integer, got {fields[0]!r}"
        elif pd.isna(pd.to_numeric(fields[1], errors="coerce")):
            yield number, f"rating must be a number, got {fields[1]!r}"
        elif pd.isna(pd.to_datetime(fields[2], format="%Y-%m-%d", errors="coerce")):
            yield number, f"date must be YYYY-MM-DD, got {fields[2]!r}"


def _parse_netflix(stream: BinaryIO) -> tuple[pd.DataFrame, int] | None:
    """(table, number of 'MovieID:' lines), parsed vectorised; None when the content is malformed.

    With ':' as the decimal mark a header 'MovieID:' parses as the number MovieID, so one
    numeric column holds movie and customer ids; headers are the lines with one field. The
    caller checks the header count against the file's ':' count, which catches a lost colon.
    """
    raw = pd.read_csv(stream, sep=",", header=None, names=["key", RATING, "date"], engine="c",
                      decimal=":", dtype={"key": "float64", RATING: "float64", "date": "category"})
    if len(raw) == 0:
        return None
    key = raw["key"].to_numpy()
    header = raw[RATING].isna().to_numpy() & raw["date"].isna().to_numpy()
    rows = ~header
    rating = raw[RATING].to_numpy()[rows]
    if not header[0] or np.isnan(key).any() or (key % 1 != 0).any() or np.isnan(rating).any():
        return None
    last_header = np.maximum.accumulate(np.where(header, np.arange(len(raw)), 0))
    days = pd.to_datetime(pd.Series(raw["date"].cat.categories), format="%Y-%m-%d", errors="coerce",
                          utc=True)
    seconds = (days - _EPOCH).dt.total_seconds().to_numpy()
    date_codes = raw["date"].cat.codes.to_numpy()[rows]
    if (date_codes < 0).any() or np.isnan(seconds).any():
        return None
    out = pd.DataFrame({
        USER: key[rows].astype(np.int64),
        ITEM: key[last_header[rows]].astype(np.int64),
        RATING: rating,
        TIMESTAMP: seconds[date_codes],
    })
    return out, int(header.sum())


def _count_colons(open_stream: Callable[[], BinaryIO]) -> int:
    with open_stream() as stream:
        return sum(chunk.count(b":") for chunk in iter(lambda: stream.read(1 << 22), b""))


def _read_netflix_stream(src: Source, label: str, open_stream: Callable[[], BinaryIO],
                         parts: list[Source]) -> pd.DataFrame:
    err: Exception | str = "malformed content"
    try:
        with open_stream() as stream:
            parsed = _parse_netflix(stream)
    except pd.errors.EmptyDataError:
        raise DataError(f"{label} is empty (file {src.label})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        parsed, err = None, exc
    if parsed is not None and parsed[1] == _count_colons(open_stream):
        return parsed[0]
    for part in parts:  # name the file and line at fault
        error = _first_problem(part, f"netflix {part.path.name}", _netflix_problems)
        if error is not None:
            raise error
    raise DataError(f"{label}: could not be read ({err}) (file {src.label})")


def _read_netflix_combined(src: Source, label: str) -> pd.DataFrame:
    """combined_data_1.txt and its siblings combined_data_2..4 (plain or .gz), in order."""
    folder = src.path.parent
    bases = sorted({p.name.removesuffix(".gz") for p in folder.glob("combined_data_*.txt*")
                    if p.name.endswith((".txt", ".txt.gz"))})
    frames = []
    for base in bases:  # a plain file wins over its .gz twin
        path = folder / base if (folder / base).exists() else folder / f"{base}.gz"
        part = Source(path, "combined_data_1.txt")
        frames.append(_read_netflix_stream(part, f"netflix {path.name}", part.open, [part]))
    return pd.concat(frames, ignore_index=True)


def _read_netflix_folder(src: Source, label: str) -> pd.DataFrame:
    """training_set/mv_*.txt read as one stream: 17,770 separate parses would be far slower."""
    paths = sorted(src.path.glob("mv_*.txt"))
    if not paths:
        raise DataError(f"{label}: no mv_*.txt files in {src.path}")
    parts = [Source(p, p.name) for p in paths]
    return _read_netflix_stream(src, label, lambda: io.BufferedReader(_Chain(paths), 1 << 20), parts)


# --------------------------------------------------------------------------- Yelp JSON lines

_YELP_KEYS = {"user_id": USER, "business_id": ITEM, "stars": RATING, "date": TIMESTAMP}


def _yelp_problems(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, f"not valid JSON ({err})"
            continue
        missing = [k for k in _YELP_KEYS if k not in record]
        if missing:
            yield number, f"missing key(s) {missing}; keys found: {sorted(record)}"
        elif pd.isna(pd.to_numeric(record["stars"], errors="coerce")):
            yield number, f"stars must be a number, got {record['stars']!r}"
        elif pd.isna(pd.to_datetime(record["date"], errors="coerce", format="ISO8601")):
            yield number, f"date must be an ISO-8601 date, got {record['date']!r}"


def _read_yelp_json(src: Source, label: str) -> pd.DataFrame:
    frames = []
    try:
        with src.open() as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
            for chunk in pd.read_json(f, lines=True, chunksize=200_000, dtype=False):
                if not set(_YELP_KEYS) <= set(chunk.columns):
                    raise ValueError("missing keys")
                frames.append(chunk[list(_YELP_KEYS)].rename(columns=_YELP_KEYS))
    except ValueError as err:
        raise _scan(src, label, _yelp_problems, err) from None
    if not frames:
        raise DataError(f"{label} is empty (file {src.label})")
    df = pd.concat(frames, ignore_index=True)
    rating = pd.to_numeric(df[RATING], errors="coerce")
    seconds = _seconds(df[TIMESTAMP].astype("str"))
    if rating.isna().any() or seconds.isna().any() or df[[USER, ITEM]].isna().to_numpy().any():
        raise _scan(src, label, _yelp_problems, "bad values")
    return pd.DataFrame({USER: df[USER].astype("str"), ITEM: df[ITEM].astype("str"),
                         RATING: rating.astype(np.float64), TIMESTAMP: seconds})


# --------------------------------------------------------------------------- the format table


@dataclass(frozen=True)
class _Format:
    read: Callable[[Source, str], pd.DataFrame]
    unknown_rating_max: float | None = None


_URRT = {USER: 0, ITEM: 1, RATING: 2, TIMESTAMP: 3}
_ML_DAT = _Format(_table(sep="::", columns=_URRT, n_fields=4))
_SEQUENCES = _Format(_read_sequences)

# Keyed by dataset, then by registry file name (a zip resolves to the member it holds).
_FORMATS: dict[str, dict[str, _Format]] = {
    "amazon-digital-music": {"amusic.rating": _Format(_table(sep=",", columns=_URRT, n_fields=4))},
    "ml-100k": {"u.data": _Format(_table(sep="\t", columns=_URRT, n_fields=4))},
    "ml-1m": {
        "ratings.dat": _ML_DAT,
        # Every rating missing from the shared partial file is 1, 2 or 3 (see its README).
        "ratings_partial.csv": _Format(_table(
            sep=",", header=True, n_fields=5, optional=frozenset({RATING, TIMESTAMP}),
            columns={USER: "user_id", ITEM: "movie_id", RATING: "rating", TIMESTAMP: "timestamp",
                     ORDER: "chrono_rank"}), unknown_rating_max=3.0),
    },
    "ml-10m": {"ratings.dat": _ML_DAT},
    "ml-20m": {"ratings.csv": _Format(_table(
        sep=",", header=True, n_fields=4,
        columns={USER: "userId", ITEM: "movieId", RATING: "rating", TIMESTAMP: "timestamp"}))},
    "amazon-beauty": {"Beauty.txt": _SEQUENCES},
    "amazon-toys": {"Toys_and_Games.txt": _SEQUENCES},
    "netflix": {"combined_data_1.txt": _Format(_read_netflix_combined),
                "training_set": _Format(_read_netflix_folder)},
    # Play counts become the rating column (implicit feedback with a strength).
    "msd": {"train_triplets.txt": _Format(_table(sep="\t", columns={USER: 0, ITEM: 1, RATING: 2},
                                                 n_fields=3, ids="str"))},
    "yelp": {"yelp.rating": _Format(_table(sep="\t", columns=_URRT, n_fields=4, ids="infer")),
             "yelp_academic_dataset_review.json": _Format(_read_yelp_json)},
    "amazon-cds": {"CDs_and_Vinyl.csv": _Format(_table(
        sep=",", columns={ITEM: 0, USER: 1, RATING: 2, TIMESTAMP: 3}, n_fields=4, ids="str"))},
}


# --------------------------------------------------------------------------- public entry points


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in schema order and dtypes; rating 1.0 where the file has none (implicit feedback).

    ``df`` is a reader's own fresh table, so its columns are taken over, not copied."""
    if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1):
        df = df.reset_index(drop=True)
    out = pd.DataFrame({
        USER: df[USER],
        ITEM: df[ITEM],
        RATING: _as(df[RATING], np.float64) if RATING in df else np.ones(len(df)),
        TIMESTAMP: _as(df[TIMESTAMP], np.float64) if TIMESTAMP in df else np.full(len(df), np.nan),
    }, copy=False)
    for col in (USER, ITEM):
        if not pd.api.types.is_integer_dtype(out[col]):
            out[col] = out[col].astype("str")
        elif out[col].dtype != np.int64:
            out[col] = out[col].astype(np.int64)
    if ORDER in df:
        out[ORDER] = _as(df[ORDER], np.int64)
    return out


def _options(name: str, given: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """``allowed`` defaults updated with ``given``; ConfigError naming unknown option names."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {unknown}; valid options: {sorted(allowed) or 'none'}")
    return {**allowed, **given}


def _csv_spec(src: Source, columns: Mapping[str, int | str] | None, sep: str,
              header: bool | None) -> _Table:
    if columns is None:  # take our own column names from the header
        names = _header(src, _Table(sep=sep, columns={}), f"csv {src.path.name}")
        columns = {c: c for c in _OUR_COLUMNS if c in names}
        if USER not in columns or ITEM not in columns:
            raise DataError(f"csv {src.path.name}: missing column(s) "
                            f"{[c for c in (USER, ITEM) if c not in names]}; columns found: {names}. "
                            f"Name them with --columns user=<column>,item=<column> in a flow (columns={{'user': ..., "
                            f"'item': ...}} in code) (file {src.label})"
                            + ("; the first line looks like data, not a header: name the columns by 0-based position "
                               "(--columns user=0,item=1,rating=2,timestamp=3) to read the file without a header"
                               if _looks_like_data(names) else ""))
    columns = dict(columns)
    bad = sorted(set(columns) - set(_OUR_COLUMNS))
    if bad or USER not in columns or ITEM not in columns:
        raise ConfigError(f"csv: columns= must map {USER!r} and {ITEM!r} (and optionally {RATING!r}, "
                          f"{TIMESTAMP!r}, {ORDER!r}) to the file's column names or positions; got {columns}")
    by_name = {isinstance(v, str) for v in columns.values()}
    if by_name not in ({True}, {False}) or any(isinstance(v, bool) or (isinstance(v, int) and v < 0)
                                               for v in columns.values()):
        raise ConfigError(f"csv: columns= values must be all column names or all 0-based positions; "
                          f"got {columns}")
    if header is None:
        header = by_name == {True}
    if by_name == {True} and not header:
        raise ConfigError("csv: columns are given by name, which needs header=True")
    return _Table(sep=sep, columns=columns, header=bool(header), ids="infer", dates=True)


def _load_csv(info: DatasetInfo, data_dir: str | os.PathLike | None, path: str | os.PathLike | None,
              columns: Mapping[str, int | str] | None, sep: str, header: bool | None) -> Dataset:
    if path is None:
        raise ConfigError(f"csv: the option path= is required. {info.format}")
    file = Path(path).expanduser()
    if not file.is_absolute() and data_dir is not None:
        file = Path(data_dir).expanduser() / file
    if file.is_dir():
        raise DataError(f"csv: {file} is a folder, not a file; pass the interaction file itself "
                        f"(--data-path FILE in a flow, path= in code)")
    if not file.is_file():
        raise DataError(f"csv: file {file} not found. {info.how_to_get}")
    src = Source(file, file.name)
    spec = _csv_spec(src, columns, sep, header)
    label = f"csv {file.name}"
    df = _finish(_read_table(src, label, spec))
    kind = "ratings" if RATING in spec.columns else "implicit"
    return Dataset("csv", df, replace(info, files=(file.name,), kind=kind), source=file)


def _synthetic_options() -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(make_synthetic).parameters.items()}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` (see :func:`list_datasets`) as a :class:`Dataset`.

    Files are searched as described in :mod:`recsys.data.download`; ``download=False`` (or
    ``$RECSYS_OFFLINE=1``) forbids fetching them. ``csv`` takes ``path``, ``columns``, ``sep`` and
    ``header``; ``synthetic`` takes :func:`make_synthetic`'s arguments. Bad input raises
    :class:`DataError` (files) or :class:`ConfigError` (names and options) before anything is
    written.
    """
    info = get_info(name)
    if name == "synthetic":
        return make_synthetic(**_options(name, options, _synthetic_options()))
    if name == "csv":
        opts = _options(name, options, {"path": None, "columns": None, "sep": ",", "header": None})
        return _load_csv(info, data_dir, **opts)
    opts = _options(name, options, {"download": True})
    src = locate(info, data_dir, download=bool(opts["download"]))
    fmt = _FORMATS[name][src.name]
    label = f"{name} {Path(src.member or src.path).name}"
    df = _finish(fmt.read(src, label))
    return Dataset(name, df, info, source=src.path, unknown_rating_max=fmt.unknown_rating_max)


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder that holds ``name``'s file (downloading it into the cache if needed and allowed)."""
    info = get_info(name)
    if not info.files:
        raise ConfigError(f"{name}: has no files to locate ({info.how_to_get})")
    return locate(info, data_dir, download=download).path.parent
