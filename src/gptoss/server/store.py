"""Stored responses (Responses API `store`), in SQLite: durable across restarts, bounded in size.

Each row keeps the response object GET returns and the conversation history a follow-up request continues
(`previous_response_id`). Only valid Unicode is stored (`put` refuses anything else), so every row can be sent
back. When the total size passes the bound, the oldest rows go first. WAL mode keeps the file
consistent if the server is killed mid-write. One connection, guarded by a lock: rows are small and writes rare.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptoss.server.unicode import ESCAPED_SURROGATE, scrub

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    bytes INTEGER NOT NULL,
    response TEXT NOT NULL,
    history TEXT NOT NULL
)
"""
# GET /v1/responses/{id}/input_items: each stored response's own input items (a table of its own, so stores written
# before it existed open unchanged); rows go when their response goes.
INPUTS_SCHEMA = "CREATE TABLE IF NOT EXISTS input_items (id TEXT PRIMARY KEY, items TEXT NOT NULL)"


class UnencodableError(ValueError):
    """A response holding text that is not valid Unicode (a lone surrogate): it is never stored."""


def encodable_json(data: object, response_id: str) -> str:
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError as e:
        raise UnencodableError(f"response {response_id} holds text that is not valid Unicode: {e.reason}") from None
    return text


def readable(text: str) -> Any:
    """A stored row as data; rows written before bodies were checked may hold lone surrogates: those are replaced,
    so every stored response can be sent."""
    data = json.loads(text)
    return scrub(data) if ESCAPED_SURROGATE.search(text) else data


@dataclass(frozen=True)
class Stored:
    response: dict[str, Any]
    history: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._db.execute(INPUTS_SCHEMA)

    def put(
        self,
        response_id: str,
        response: dict[str, Any],
        history: list[dict[str, Any]],
        inputs: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Stores (replacing any row with this id) and evicts the oldest rows past the bound. False when this one
        response alone is larger than the bound and so was not kept."""
        response_json, history_json = encodable_json(response, response_id), encodable_json(history, response_id)
        inputs_json = encodable_json(inputs or [], response_id)
        size = len(response_json.encode()) + len(history_json.encode()) + len(inputs_json.encode())
        if size > self.max_bytes:
            return False
        with self._lock, self._db:  # the context manager commits, or rolls back on an exception
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            self._db.execute(
                "INSERT INTO responses (id, created, bytes, response, history) VALUES (?, ?, ?, ?, ?)",
                (response_id, time.time(), size, response_json, history_json),
            )
            self._db.execute("INSERT OR REPLACE INTO input_items (id, items) VALUES (?, ?)", (response_id, inputs_json))
            self._evict()
            self._db.execute("DELETE FROM input_items WHERE id NOT IN (SELECT id FROM responses)")
        return True

    def _evict(self) -> None:
        total = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM responses").fetchone()[0]
        doomed = []
        for seq, size in self._db.execute("SELECT seq, bytes FROM responses ORDER BY seq"):  # lazily, oldest first
            if total <= self.max_bytes:
                break
            doomed.append((seq,))
            total -= size
        self._db.executemany("DELETE FROM responses WHERE seq = ?", doomed)

    def get(self, response_id: str) -> Stored | None:
        with self._lock:
            row = self._db.execute("SELECT response, history FROM responses WHERE id = ?", (response_id,)).fetchone()
        return None if row is None else Stored(readable(row[0]), readable(row[1]))

    def latest_in_conversation(self, conversation_id: str) -> str | None:
        """The newest stored response of a conversation (the `conversation` request field), if any."""
        query = "SELECT id FROM responses WHERE json_extract(response, '$.conversation.id') = ? ORDER BY seq DESC"
        with self._lock:
            row = self._db.execute(query + " LIMIT 1", (conversation_id,)).fetchone()
        return None if row is None else str(row[0])

    def input_items(self, response_id: str) -> list[dict[str, Any]] | None:
        """The stored response's input items, oldest first (None: no such response)."""
        with self._lock:
            row = self._db.execute("SELECT items FROM input_items WHERE id = ?", (response_id,)).fetchone()
        return None if row is None else list(readable(row[0]))

    def delete(self, response_id: str) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM input_items WHERE id = ?", (response_id,))
            return self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def total_bytes(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
