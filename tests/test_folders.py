"""The one folder scanner: classes, image files, what it skips and how it refuses a bad tree."""

import os

import PIL.Image
import pytest

from nas.training.folders import DataError, index_folder
from tests.imagedata import mixed_folder, noise


@pytest.fixture
def folder(tmp_path):
    return mixed_folder(tmp_path / "data")


def test_index_finds_classes_and_counts_without_decoding(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("indexing opened an image")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    index = index_folder(folder)
    assert index.classes == ("cat", "dog", "fox")
    assert index.counts() == {"cat": 6, "dog": 6, "fox": 6}
    assert len(index) == 18
    assert ("fox/deep/5.JPEG", 2) in index.samples
    assert all(not p.endswith(".txt") and "/." not in p for p, _ in index.samples)


def test_index_lists_samples_by_class_then_path(folder):
    samples = index_folder(folder).samples
    assert [label for _, label in samples] == sorted(label for _, label in samples)
    assert samples[:6] == tuple((f"cat/{i}.{'jpg' if i % 2 else 'png'}", 0) for i in range(6))


def test_index_counts_a_class_of_one_image(tmp_path):
    for name, n in (("big", 3), ("single", 1)):
        (tmp_path / name).mkdir()
        for i in range(n):
            noise(8, 8, i).save(tmp_path / name / f"{i}.png")
    assert index_folder(tmp_path).counts() == {"big": 3, "single": 1}


def test_index_ends_a_symlink_loop(folder):
    os.symlink(folder / "cat", folder / "cat" / "again")
    assert index_folder(folder).counts()["cat"] == 6


def test_missing_root_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"'.*nowhere' does not exist"):
        index_folder(tmp_path / "nowhere")


def test_a_file_as_root_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"file\.png' is not a directory"):
        index_folder(tmp_path / "file.png")


def test_one_class_folder_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "only").mkdir()
    noise(8, 8, 0).save(tmp_path / "only" / "0.png")
    (tmp_path / ".hidden").mkdir()  # not a class
    with pytest.raises(DataError, match=r"has 1 class folders \('only'\); expected at least 2"):
        index_folder(tmp_path)


def test_an_empty_class_folder_is_a_data_error_naming_it(folder):
    (folder / "empty").mkdir()
    (folder / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder 'empty' in .* holds no images; valid suffixes: "
                                        r".*\.jpeg"):
        index_folder(folder)
