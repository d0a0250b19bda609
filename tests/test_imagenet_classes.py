"""The ImageNet class table shipped as package data, and how wnid folders map to DiT's classes."""

from __future__ import annotations

import pytest

from dmgd.data.classes import (ClassSelectionError, choose_class_names, classes_problem, imagenet_class_ids,
                               output_names)
from dmgd.data.imagenet import NETTE, WOOF, imagenet_classes, is_wnid

WOOF_INDICES = (193, 182, 258, 162, 155, 167, 159, 273, 207, 229)
NETTE_INDICES = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


def test_the_table_has_the_1000_sorted_unique_wnids_with_names():
    table = imagenet_classes()
    assert len(table.wnids) == 1000 and len(set(table.wnids)) == 1000
    assert list(table.wnids) == sorted(table.wnids)
    assert table.wnids[0] == "n01440764" and table.index("n01440764") == 0
    assert table.wnids[999] == "n15075141" and table.index("n15075141") == 999
    assert len(table.names) == 1000 and all(table.names)
    assert table.names[0].startswith("tench")
    assert table.names[table.index("n02096294")] == "Australian terrier"


def test_woof_and_nette_indices_in_the_specs_order():
    table = imagenet_classes()
    assert tuple(table.index(w) for w in WOOF) == WOOF_INDICES
    assert tuple(table.index(w) for w in NETTE) == NETTE_INDICES


def test_a_folder_of_only_woofs_ten_wnids_maps_to_their_imagenet_indices():
    """The peers' loaders list a 10-folder root and get 0-9; DiT's classes are 193, ..."""
    names = sorted(WOOF)
    ids = imagenet_class_ids(names, 1000)
    assert ids == tuple(imagenet_classes().index(n) for n in names)
    assert dict(zip(names, ids))["n02096294"] == 193
    assert imagenet_class_ids(names, 10) is None  # a 10-class model is not ImageNet's
    assert imagenet_class_ids(["0", "1"], 1000) is None  # digit folders keep their old mapping


@pytest.mark.parametrize("text", ["woof", "nette", "imagenet", "n02096294", "193, 182", "n02096294 207",
                                  "n02096294,207"])
def test_valid_selections(text):
    assert classes_problem(text) is None


@pytest.mark.parametrize("text,word", [("wof", "'wof'"), ("n99999999", "'n99999999'"), ("", "names no class"),
                                       ("193,cat", "'cat'")])
def test_invalid_selections_are_named(text, word):
    problem = classes_problem(text)
    assert problem is not None and word in problem


def test_choosing_from_a_folder_of_all_1000_wnids():
    names = imagenet_classes().wnids
    assert choose_class_names(names, "woof") == tuple(sorted(WOOF))
    assert choose_class_names(names, "193, n02093754") == ("n02093754", "n02096294")
    assert len(choose_class_names(names, "imagenet")) == 1000


def test_indices_pick_numbered_folders_when_the_data_has_no_wnids():
    assert choose_class_names(["0", "1", "2", "7"], "7, 1") == ("1", "7")
    assert choose_class_names(["00000", "00007"], "7") == ("00007",)


def test_a_class_the_data_lacks_is_an_error_naming_it():
    with pytest.raises(ClassSelectionError, match=r"n02096294 \(ImageNet class 193, Australian terrier\)"):
        choose_class_names(["n01440764"], "woof", root="/data/train")


def test_output_names():
    assert output_names(["n02096294"], [193], "data") == ("n02096294",)
    assert output_names(["n02096294"], [193], "index") == ("00193",)
