"""The batch's output folders: one per as-of month, replaced as a whole at a single instant.

`OUT/2025-12` is a symbolic link to `OUT/versions/2025-12.<UTC time>.<token>/`, the folder of one run's
files. A run writes its files into a hidden `.partial` folder under `versions/`, flushes them to disk,
renames that folder to its version name (complete from then on), makes a new link beside the month's name
and renames it over `OUT/2025-12`, then deletes the version the month pointed to before. Renaming a link
over a link is one `rename(2)`, atomic on POSIX, so whoever opens `OUT/2025-12/...` at any instant gets
the complete old set or the complete new set, never a mix and never nothing. (Two folders cannot be
swapped atomically on POSIX; a link can.)

A kill leaves only things `recover` knows, and every run calls it before anything else, whether it then
succeeds or fails. The month is what its link says: recovery deletes a partial folder, a version that
was never linked, a link that was never renamed, and the version the month no longer points to.

Months that earlier code wrote as plain folders are read as they are and become links when next written.
That one-time step is the only one with an instant where the month's name is missing (POSIX cannot swap
a folder for a link): the plain folder is moved into `versions/` as `MONTH.<time>.legacy` just before the
link is renamed into place; a run killed in between is undone by recovery, which moves that folder back.
The `.2025-12.old-PID` folder that earlier code could leave between its own two renames is put back too.

Runs that share an output folder take turns: `recover` and `publish` hold an exclusive `flock` on the
folder itself, so one run's recovery never removes another's unfinished version (a kill frees the lock).

Nothing here imports more than the standard library: the fault tests kill a small process at each named
point of `publish` (`_checkpoint`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from features.book import new_dir

log = logging.getLogger(__name__)

VERSIONS = "versions"
MONTH = re.compile(r"\d{4}-\d{2}")
# what a run may leave in OUT: a month, its temp link, and the folders of the earlier writer
_LEFT_IN_OUT = re.compile(r"\.?(\d{4}-\d{2})(\.link-\d+|\.partial|\.old-\d+)?")
_LEFT_IN_VERSIONS = re.compile(r"\.?(\d{4}-\d{2})\..+")


def _checkpoint(point: str) -> None:
    """A named instant of `publish` ("write:FILE", "complete", "linked", "moved_legacy", "swapped").

    Does nothing; the fault tests replace it in a child process to kill that process right there."""


def publish(out_dir: Path, name: str, writers: Mapping[str, Callable[[Path], None]]) -> Path:
    """Write one file per writer (`writers[file](path)`) into a new version of `out_dir/name` and make
    `out_dir/name` point at it in one atomic rename; the previous version is then deleted. Returns the
    version folder. On an error the month is left as it was (or, past the swap, as it now is)."""
    versions = out_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        return _publish(out_dir, name, writers)


def _publish(out_dir: Path, name: str, writers: Mapping[str, Callable[[Path], None]]) -> Path:
    versions, target = out_dir / VERSIONS, out_dir / name
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    partial = new_dir(versions, f".{name}.{stamp}.", ".partial")
    version = versions / partial.name[1 : -len(".partial")]
    try:
        for file, write in writers.items():
            _checkpoint(f"write:{file}")
            write(partial / file)
            _fsync(partial / file)
        _fsync(partial)
        os.rename(partial, version)
        _fsync(versions)
        _checkpoint("complete")
        link = _new_link(out_dir, name, version)
        _checkpoint("linked")
        if target.is_dir() and not target.is_symlink():  # a month written by earlier code: a plain folder
            os.rename(target, versions / f"{name}.{_stamp_of(target)}.legacy")
            _checkpoint("moved_legacy")
        os.replace(link, target)
        _fsync(out_dir)
        _checkpoint("swapped")
    except BaseException:
        with contextlib.suppress(OSError):  # the error that stopped the run is the one to report
            _recover_month(out_dir, name)
        raise
    _recover_month(out_dir, name)  # deletes the version the month pointed to before
    return version


def recover(out_dir: Path, name: str | None = None) -> list[str]:
    """Undo what killed or failed runs left in `out_dir` (for one month `name`, or all): see the module
    docstring. Returns what it deleted or restored, for the log."""
    if not out_dir.is_dir():
        return []
    done: list[str] = []
    with _locked(out_dir):
        for month in sorted({name} if name else _months_with_leftovers(out_dir)):
            done += _recover_month(out_dir, month)
    for what in done:
        log.warning("recovered %s: %s", out_dir, what)
    return done


def _recover_month(out_dir: Path, name: str) -> list[str]:
    target, versions = out_dir / name, out_dir / VERSIONS
    done: list[str] = []
    for link in out_dir.glob(f".{name}.link-*"):  # made, never renamed over the month
        link.unlink()
        done.append(f"removed the unused link {link.name}")
    partials = [*out_dir.glob(f".{name}.partial"), *versions.glob(f".{name}.*.partial")]
    for p in partials:  # never completed
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed the unfinished {p.relative_to(out_dir)}")
    olds = sorted(out_dir.glob(f".{name}.old-*"))  # the earlier writer's previous outputs, moved aside
    complete = sorted(v for v in versions.glob(f"{name}.*") if v.is_dir() and not v.name.endswith(".partial"))
    if not os.path.lexists(target):
        legacy = [v for v in complete if v.name.endswith(".legacy")]
        if legacy:  # killed while a plain month folder became a link: undo that step
            complete.remove(legacy[-1])
            os.rename(legacy[-1], target)
            done.append(f"put {name} back from {legacy[-1].relative_to(out_dir)}")
        elif olds:  # killed between the earlier writer's two renames: put the old outputs back
            os.rename(olds[-1], target)
            done.append(f"put {name} back from {olds.pop().name}")
        if done:
            _fsync(out_dir)
    current = target.resolve() if target.is_symlink() else None
    for v in [*complete, *olds]:
        if v.resolve() != current:
            shutil.rmtree(v, ignore_errors=True)
            done.append(f"removed the stale {v.relative_to(out_dir)}")
    return done


def _months_with_leftovers(out_dir: Path) -> set[str]:
    found = {m.group(1) for p in out_dir.iterdir() if (m := _LEFT_IN_OUT.fullmatch(p.name))}
    versions = out_dir / VERSIONS
    if versions.is_dir():
        found |= {m.group(1) for p in versions.iterdir() if (m := _LEFT_IN_VERSIONS.fullmatch(p.name))}
    return found


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder (waits for another run to finish its turn)."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing frees the lock


def _new_link(out_dir: Path, name: str, version: Path) -> Path:
    """A link to `version` beside the month's name, relative so the whole folder can move."""
    link = out_dir / f".{name}.link-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(Path(VERSIONS) / version.name, link)
    return link


def _stamp_of(folder: Path) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(folder.stat().st_mtime))


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk, so a power cut cannot undo a rename (a kill cannot)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot flush a folder
            os.fsync(fd)
    finally:
        os.close(fd)
