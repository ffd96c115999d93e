"""The identity of a task's data: a fingerprint of the files a task trains on, written beside them.

A point's numbers depend on its config and on its data, so both name it (``point.identity`` adds ``data``): points
trained on other bytes (a re-download, a subset, a foreign file under the same name) get other signatures, and a
relaunch on other data never reads as "already done".

The prepare step writes ``fingerprint.json`` once, beside the files::

    {"version": 1, "sha256": "<digest of the files' digests>",
     "files": {"train-images-idx3-ubyte": {"size": 47040016, "mtime_ns": ..., "sha256": "..."}, ...}}

Reading it costs a stat per file: when a file's size or modification time differs from the record (the data were
replaced or touched after prepare, or were prepared by an older version without a fingerprint), the files are hashed
again and the record rewritten, with a warning; a store shared read-only gets the new digest without the rewrite.
(A file replaced by another of the same size with its modification time forged is not noticed: the record trusts the
file system's times, as make and rsync do.)

``of_task(task_cfg)`` is the fingerprint of a task config's data, ``"sha256:<16 hex>"``, or None for tasks that
generate their data from their config (synthetic images, the noisy quadratic), whose config already names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surge_repro.tasks import DataError

log = logging.getLogger("surge_repro")

FILE = "fingerprint.json"
VERSION = 1
_CHUNK = 1 << 22


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _combined(files: dict[str, dict]) -> str:
    lines = "".join(f"{name}\t{rec['sha256']}\n" for name, rec in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class DataFiles:
    """The files a task trains on: ``names`` in ``folder``, recorded in ``folder/record``; ``prepare`` is the
    prepare step's task name (for messages)."""

    folder: Path
    names: list[str]
    prepare: str
    record: str = FILE


def write(folder: Path, names: list[str], record_name: str = FILE) -> str:
    """Hash ``names`` (files in ``folder``) and record them in ``folder/record_name``; returns the digest."""
    from surge_repro.store import (
        atomic_write,  # the store's atomic writer; imported here: store imports pandas
    )

    files = {name: {**_stat(folder / name), "sha256": _sha256(folder / name)} for name in names}
    record = {"version": VERSION, "sha256": _combined(files), "files": files}
    try:
        atomic_write(folder / record_name, json.dumps(record, indent=1))
    except OSError as err:  # a data folder shared read-only: the digest still names the points
        log.warning("could not write %s (%s); the data's fingerprint is computed again in each process",
                    folder / record_name, err.strerror)
    return record["sha256"]


def read(folder: Path, names: list[str], record_name: str = FILE) -> str:
    """The digest of ``names`` in ``folder``: from the record when every file's size and time match it, else hashed
    again (and recorded)."""
    try:
        record = json.loads((folder / record_name).read_text())
        fresh = record["version"] == VERSION and set(record["files"]) == set(names) and all(
            {k: record["files"][n][k] for k in ("size", "mtime_ns")} == _stat(folder / n) for n in names)
    except FileNotFoundError:
        record, fresh = None, False
    except (OSError, ValueError, KeyError, TypeError):
        record, fresh = {}, False
    if fresh:
        return record["sha256"]
    if record is not None:
        log.warning("the data in %s changed since they were fingerprinted (or the record is unreadable): hashing "
                    "them again; points trained on them get new signatures", folder)
    return write(folder, names, record_name)


def short(digest: str) -> str:
    return f"sha256:{digest[:16]}"


def of_task(task: Any) -> str | None:
    """The fingerprint of the data a task config (``cfg.task``) trains on; None for generated data. Raises
    ``DataError`` naming the prepare command when the files are not there."""
    files = locate(task)
    if files is None:
        return None
    missing = [n for n in files.names if not (files.folder / n).is_file()]
    if missing:
        raise DataError(f"the data of task {task.name} are missing from {files.folder} ({', '.join(missing)}). "
                        f"Run: python -m surge_repro.tasks.prepare task={files.prepare} paths.data={task.root}")
    return short(read(files.folder, files.names, files.record))


def locate(task: Any) -> DataFiles | None:
    """Where a task config's data lie, None for data generated from the config."""
    from surge_repro.tasks import text, vision

    target = str(task.get("_target_", ""))
    builder = target.rsplit(".", 1)[-1]
    if target.startswith("surge_repro.tasks.vision."):
        return vision.data_files(builder, task)
    if target.startswith("surge_repro.tasks.text."):
        return text.data_files(builder, task)
    return None


