"""Moving a finished folder (a book, a batch's outputs) into place."""

from __future__ import annotations

import os

import pytest

from features.book import replace_dir


def _folder(path, text: str):
    path.mkdir()
    (path / "loans.csv").write_text(text)
    return path


def test_a_new_folder_replaces_the_old_one_whole(tmp_path) -> None:
    dst = _folder(tmp_path / "book", "old")
    replace_dir(_folder(tmp_path / "new", "new"), dst)
    assert (dst / "loans.csv").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["book"]


def test_a_move_that_fails_leaves_the_old_folder_where_it_was(tmp_path, monkeypatch) -> None:
    dst = _folder(tmp_path / "book", "old")
    src = _folder(tmp_path / "new", "new")
    real = os.replace

    def second_move_fails(a, b):
        if os.fspath(a) == os.fspath(src):
            raise OSError("device busy")
        return real(a, b)

    monkeypatch.setattr(os, "replace", second_move_fails)
    with pytest.raises(OSError, match="device busy"):
        replace_dir(src, dst)
    assert (dst / "loans.csv").read_text() == "old"  # not hidden as .book.old-PID
    assert sorted(os.listdir(tmp_path)) == ["book", "new"]
