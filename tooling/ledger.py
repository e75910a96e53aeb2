"""The ledger of acknowledged writes: what the load generators saw happen, for the proof to
check against PostgreSQL.

Every Locust process (the single local one, or each distributed worker) appends JSON lines to
its own file, `ledger-<pid>.jsonl`, in one directory: one line per acknowledged write, and
one summary line per process when its users stop. Lines are written as they happen, so a
process that dies still leaves what it saw. No Locust import here: the proof reads these.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

USER_CREATED = "user+"  # pubid, items (created with it)
USER_DELETED = "user-"  # pubid, items (gone with it through ON DELETE CASCADE)
ITEM_CREATED = "item+"  # pubid, owner
ITEM_DELETED = "item-"  # pubid, owner
HOT_WRITE = "hot"  # table, pubid, value: a 200 to a write of a row many clients write
PROCESS = "process"  # one Locust process's summary, when its users stop


class LedgerWriter:
    """Append-only, one line per event, flushed per line (one process writes each file)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"ledger-{os.getpid()}.jsonl"
        self._file: IO[str] = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"e": event, **fields}, separators=(",", ":")) + "\n")

    def process_summary(self, **counts: Any) -> None:
        """This process's requests, worker_pids, role and throttled_logins, as Locust saw."""
        self.write(PROCESS, pid=os.getpid(), **counts)


@dataclass
class Ledger:
    """Everything all processes wrote, folded together."""

    users_created: set[str] = field(default_factory=set)
    users_deleted: set[str] = field(default_factory=set)
    initial_items: int = 0
    cascaded_items: int = 0
    items_created: dict[str, str] = field(default_factory=dict)  # pubid -> owner pubid
    items_deleted: set[str] = field(default_factory=set)
    hot_values: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)  # "METHOD name" -> count
    worker_pids: Counter[str] = field(default_factory=Counter)
    throttled_logins: int = 0  # 429s to POST /auth/token that Locust saw

    @property
    def users_expected(self) -> set[str]:
        return self.users_created - self.users_deleted

    @property
    def items_expected(self) -> set[str]:
        return {
            pubid
            for pubid, owner in self.items_created.items()
            if pubid not in self.items_deleted and owner not in self.users_deleted
        }

    @property
    def items_gone(self) -> set[str]:
        """Deleted one by one, or with their owner."""
        return set(self.items_created) - self.items_expected

    @property
    def user_rows_delta(self) -> int:
        return len(self.users_created) - len(self.users_deleted)

    @property
    def item_rows_delta(self) -> int:
        """Items created (one by one or with their user) minus deleted (one by one or with
        their user). Items deleted one by one never count again in a user's cascade."""
        return (
            self.initial_items
            + len(self.items_created)
            - len(self.items_deleted)
            - self.cascaded_items
        )

    def record(self, event: str, **fields: Any) -> None:
        """One event as the writer would log it (for in-process traffic)."""
        self.add({"e": event, **fields})

    def add(self, record: dict[str, Any]) -> None:
        match record.get("e"):
            case "user+":
                self.users_created.add(record["pubid"])
                self.initial_items += int(record.get("items", 0))
            case "user-":
                self.users_deleted.add(record["pubid"])
                self.cascaded_items += int(record.get("items", 0))
            case "item+":
                self.items_created[record["pubid"]] = record["owner"]
            case "item-":
                self.items_deleted.add(record["pubid"])
            case "hot":
                key = (record["table"], record["pubid"])
                self.hot_values.setdefault(key, set()).add(record["value"])
            case "process":
                self.requests.update(record.get("requests", {}))
                self.worker_pids.update(record.get("worker_pids", {}))
                self.throttled_logins += int(record.get("throttled_logins", 0))
            case other:
                raise ValueError(f"unknown ledger event {other!r}")


def read_ledger(directory: Path) -> Ledger:
    ledger = Ledger()
    for path in sorted(directory.glob("ledger-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ledger.add(json.loads(line))
    return ledger
