"""A library's catalogue: one SQLite file (standard ``sqlite3``, WAL mode) that is the truth about it.

Tables: ``meta`` (format, generation, active and target vector keys), ``roots`` and ``excludes``,
``files`` (one row per image file: path, size, mtime_ns, sha256 of its bytes, EXIF date taken and camera,
pixel size, 64-bit perceptual hash and 32x32 pixel-check thumbnail, and a one-line reason when it cannot be read), ``models`` (each vector key: model name, model
id, precision, dimension), ``chunks`` (each vector chunk file of a key and its sha256) and ``vectors``
(per key and content hash: the chunk and row of its vector).

A file row's id is the id of its vector in the FAISS index, so a row never changes content: an edited file
gets a new row (and id); a touched file whose bytes are the same keeps its row. Every write is one
transaction that bumps ``generation``; an index saved with the generation it reflects is known current.

Format 2 added ``files.phash``, format 3 ``files.thumb``; an older catalogue is migrated in place when
opened (the columns added, empty: :func:`core.library.update.hash_missing` fills them).

Paths are stored as the file system's bytes (:func:`db_text`), read back with ``surrogateescape``: a file
whose name is not UTF-8 (an old archive's Latin-1 names) keeps the exact name Python's ``os`` functions
gave it, where binding that ``str`` as SQLite text would fail. UTF-8 names are stored as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.data.phash import Fingerprint
from core.library.home import LibraryError

FORMAT = 3
PATH_PARAM = "CAST(? AS TEXT)"  # a path parameter: :func:`db_text`'s bytes, stored and compared as text
_MIGRATIONS = {  # from format N to N + 1
    1: "ALTER TABLE files ADD COLUMN phash TEXT",
    2: "ALTER TABLE files ADD COLUMN thumb BLOB",
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS excludes (pattern TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT,
    taken REAL,
    camera TEXT,
    width INTEGER,
    height INTEGER,
    failed TEXT,
    phash TEXT,
    thumb BLOB
);
CREATE INDEX IF NOT EXISTS files_hash ON files (hash);
CREATE TABLE IF NOT EXISTS models (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, model_id TEXT NOT NULL, precision TEXT NOT NULL, dim INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key TEXT NOT NULL, chunk INTEGER NOT NULL, sha256 TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (key, chunk)
);
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT NOT NULL, hash TEXT NOT NULL, chunk INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (key, hash)
);
"""


@dataclass(frozen=True)
class FileRow:
    """What the catalogue knows of one file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    taken: float | None
    camera: str | None
    width: int | None
    height: int | None
    failed: str | None
    phash: str | None

    @property
    def when(self) -> float:
        """Date taken (EXIF) in seconds since the epoch, else the file's mtime."""
        return self.taken if self.taken is not None else self.mtime_ns / 1e9


@dataclass(frozen=True)
class NewFile:
    """A scanned file about to be catalogued (its hash and header already read)."""

    path: str
    size: int
    mtime_ns: int
    hash: str | None
    taken: float | None = None
    camera: str | None = None
    width: int | None = None
    height: int | None = None
    failed: str | None = None
    phash: str | None = None
    thumb: bytes | None = None


@dataclass(frozen=True)
class ModelKey:
    """The vectors of one model in one precision: ``key`` names their folder and rows."""

    key: str
    name: str
    model_id: str
    precision: str
    dim: int


_FILE_COLUMNS = "id, path, size, mtime_ns, hash, taken, camera, width, height, failed, phash"


def db_text(path: str) -> bytes:
    """``path`` (a name from ``os``, non-UTF-8 bytes as lone surrogates) as the bytes SQLite stores for it,
    bound through :data:`PATH_PARAM`."""
    return path.encode("utf-8", "surrogateescape")


def _read_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Catalogue:
    """An open catalogue; use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        self.db.text_factory = _read_text
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a lost last commit orphans a chunk, no more
        self.db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); runs outside a transaction
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(FORMAT),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older catalogue up to :data:`FORMAT` in place (one transaction per step); refuse a
        newer or unknown one."""
        found = self.get_meta("format")
        while found is not None and found.isdigit() and int(found) in _MIGRATIONS:
            with self.transaction() as db:
                if db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == found:
                    db.execute(_MIGRATIONS[int(found)])  # another process may have migrated meanwhile
                    self.set_meta(db, "format", str(int(found) + 1))
            found = self.get_meta("format")
        if found != str(FORMAT):
            raise LibraryError(
                f"{self.path} has catalogue format {found}, this capsearch reads format {FORMAT}",
                hint="use the capsearch that made it, or remove the library (`capsearch library remove "
                "NAME`) and add its folders again",
            )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def change(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that bumps the generation."""
        with self.transaction() as db:
            yield db
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # -- meta, roots, excludes ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, db: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def excludes(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT pattern FROM excludes ORDER BY pattern")]

    def add_roots(self, roots: Iterable[str], excludes: Iterable[str]) -> None:
        with self.change() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO roots VALUES ({PATH_PARAM})", [(db_text(r),) for r in roots]
            )
            db.executemany(
                f"INSERT OR IGNORE INTO excludes VALUES ({PATH_PARAM})", [(db_text(e),) for e in excludes]
            )

    # -- models ----------------------------------------------------------------------------------------
    def model(self, key: str | None) -> ModelKey | None:
        if key is None:
            return None
        row = self.db.execute("SELECT key, name, model_id, precision, dim FROM models WHERE key = ?", (key,))
        found = row.fetchone()
        return None if found is None else ModelKey(*found)

    def add_model(self, model: ModelKey) -> None:
        with self.change() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
                (model.key, model.name, model.model_id, model.precision, model.dim),
            )

    # -- files -----------------------------------------------------------------------------------------
    def files(self) -> list[FileRow]:
        return [FileRow(*r) for r in self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY id")]

    def file_by_path(self, path: str) -> FileRow | None:
        sql = f"SELECT {_FILE_COLUMNS} FROM files WHERE path = {PATH_PARAM}"
        row = self.db.execute(sql, (db_text(path),)).fetchone()
        return None if row is None else FileRow(*row)

    def files_by_id(self, ids: Iterable[int]) -> dict[int, FileRow]:
        wanted = list(ids)
        out: dict[int, FileRow] = {}
        for start in range(0, len(wanted), 900):
            part = wanted[start : start + 900]
            marks = ",".join("?" * len(part))
            for r in self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE id IN ({marks})", part):
                out[r[0]] = FileRow(*r)
        return out

    def stamps(self) -> dict[str, tuple[int, int, int, str | None]]:
        """path -> (id, size, mtime_ns, hash) of every file."""
        rows = self.db.execute("SELECT path, id, size, mtime_ns, hash FROM files")
        return {p: (i, s, m, h) for p, i, s, m, h in rows}

    def apply_scan(
        self, gone: list[int], touched: list[tuple[int, int, int]], replaced: list[int], new: list[NewFile]
    ) -> None:
        """One transaction: drop ``gone`` and ``replaced`` rows, update the (size, mtime) of ``touched``
        rows (id, size, mtime_ns) whose bytes did not change, insert ``new`` rows (fresh ids)."""
        with self.change() as db:
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in [*gone, *replaced]])
            db.executemany(
                "UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", [(s, m, i) for i, s, m in touched]
            )
            db.executemany(
                "INSERT INTO files "
                "(path, size, mtime_ns, hash, taken, camera, width, height, failed, phash, thumb) "
                f"VALUES ({PATH_PARAM}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        db_text(f.path),
                        f.size,
                        f.mtime_ns,
                        f.hash,
                        f.taken,
                        f.camera,
                        f.width,
                        f.height,
                        f.failed,
                        f.phash,
                        f.thumb,
                    )
                    for f in new
                ],
            )

    def fingerprints_of(self, hashes: list[str]) -> dict[str, Fingerprint]:
        """content hash -> perceptual hash and thumbnail, for the ``hashes`` catalogued with both."""
        out: dict[str, Fingerprint] = {}
        for start in range(0, len(hashes), 900):
            part = hashes[start : start + 900]
            marks = ",".join("?" * len(part))
            sql = (
                "SELECT hash, phash, thumb FROM files WHERE phash IS NOT NULL AND phash != '' "
                f"AND thumb IS NOT NULL AND hash IN ({marks})"
            )
            out.update({h: Fingerprint(p, bytes(t)) for h, p, t in self.db.execute(sql, part)})
        return out

    def thumbs_by_id(self, ids: Iterable[int]) -> dict[int, bytes]:
        """file id -> pixel-check thumbnail (empty where the file could not be decoded), for ``ids``."""
        wanted, out = list(ids), {}
        for start in range(0, len(wanted), 900):
            part = wanted[start : start + 900]
            sql = (
                f"SELECT id, thumb FROM files WHERE thumb IS NOT NULL AND id IN ({','.join('?' * len(part))})"
            )
            out.update({i: bytes(t) for i, t in self.db.execute(sql, part)})
        return out

    def unhashed(self) -> list[tuple[int, str]]:
        """(id, path) of every readable file without a perceptual hash or thumbnail (catalogued by an
        older format)."""
        rows = self.db.execute(
            "SELECT id, path FROM files WHERE (phash IS NULL OR thumb IS NULL) AND failed IS NULL ORDER BY id"
        )
        return [(i, p) for i, p in rows]

    def set_fingerprints(self, found: list[tuple[int, Fingerprint | None]]) -> None:
        """Record perceptual hashes and thumbnails (file id, fingerprint or None: undecodable, stored
        empty); no generation bump (the index does not depend on them)."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE files SET phash = ?, thumb = ? WHERE id = ?",
                [(f.phash, f.thumb, i) if f else ("", b"", i) for i, f in found],
            )

    # -- vectors ---------------------------------------------------------------------------------------
    def missing_vectors(self, key: str) -> list[tuple[str, str]]:
        """(hash, one path) of every readable content without a vector for ``key``, by first file id."""
        rows = self.db.execute(  # SQLite takes a bare column (path) from the row that gives MIN(id)
            "SELECT hash, path, MIN(id) AS first FROM files f WHERE hash IS NOT NULL AND failed IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.key = ? AND v.hash = f.hash) "
            "GROUP BY hash ORDER BY first",
            (key,),
        )
        return [(h, p) for h, p, _ in rows]

    def next_chunk(self, key: str) -> int:
        row = self.db.execute("SELECT MAX(chunk) FROM chunks WHERE key = ?", (key,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def chunks(self, key: str) -> dict[int, tuple[str, int]]:
        rows = self.db.execute("SELECT chunk, sha256, count FROM chunks WHERE key = ?", (key,))
        return {c: (s, n) for c, s, n in rows}

    def add_vectors(
        self, key: str, chunk: int, sha256: str, hashes: list[str], failed: list[tuple[str, str]]
    ) -> None:
        """One transaction: chunk ``chunk`` (already durable) holds the vectors of ``hashes`` in order;
        ``failed`` (hash, reason) contents could not be read, and every file holding them is marked."""
        with self.change() as db:
            if hashes:
                db.execute(
                    "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", (key, chunk, sha256, len(hashes))
                )
                db.executemany(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                    [(key, h, chunk, row) for row, h in enumerate(hashes)],
                )
            db.executemany("UPDATE files SET failed = ? WHERE hash = ?", [(r, h) for h, r in failed])

    def ids_of_hashes(self, hashes: list[str]) -> list[tuple[int, str]]:
        """(file id, hash) of the readable files holding ``hashes``."""
        out: list[tuple[int, str]] = []
        for start in range(0, len(hashes), 900):
            part = hashes[start : start + 900]
            marks = ",".join("?" * len(part))
            sql = f"SELECT id, hash FROM files WHERE failed IS NULL AND hash IN ({marks}) ORDER BY id"
            out += [(i, h) for i, h in self.db.execute(sql, part)]
        return out

    def drop_chunk(self, key: str, chunk: int) -> None:
        """Forget a damaged chunk: its contents will be embedded again."""
        with self.change() as db:
            db.execute("DELETE FROM vectors WHERE key = ? AND chunk = ?", (key, chunk))
            db.execute("DELETE FROM chunks WHERE key = ? AND chunk = ?", (key, chunk))

    def indexed(self, key: str) -> dict[int, tuple[int, int]]:
        """file id -> (chunk, row) of every file whose content has a vector for ``key``."""
        rows = self.db.execute(
            "SELECT f.id, v.chunk, v.row FROM files f JOIN vectors v ON v.hash = f.hash AND v.key = ? "
            "WHERE f.failed IS NULL",
            (key,),
        )
        return {i: (c, r) for i, c, r in rows}

    def embedded_count(self, key: str) -> int:
        """How many readable files have a vector for ``key``."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM files f JOIN vectors v ON v.hash = f.hash AND v.key = ? WHERE f.failed IS NULL",
            (key,),
        ).fetchone()
        return int(row[0])

    def counts(self, key: str | None) -> dict[str, int]:
        """Files, distinct contents, failed files and files with a vector for ``key``."""
        one = self.db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT hash), SUM(failed IS NOT NULL) FROM files"
        ).fetchone()
        embedded = self.embedded_count(key) if key else 0
        return {"files": one[0], "contents": one[1], "failed": int(one[2] or 0), "embedded": embedded}

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT path, failed FROM files WHERE failed IS NOT NULL ORDER BY path LIMIT ?", (limit,)
        )
        return [(p, f) for p, f in rows]
