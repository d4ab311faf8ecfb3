"""The notebook API's mistakes: each bad argument is one KneuronsError line naming the value, raised before any model
work (issue 37's list: boxes, units, kinds, a single image, words not in a caption, a box that leaves k in)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import kneurons.api
from kneurons import KnowledgeNeurons
from kneurons.api import Finding
from kneurons.errors import KneuronsError
from tests.conftest import PROMPT


@pytest.fixture(scope="module")
def kn(tiny_model_dir) -> KnowledgeNeurons:
    return KnowledgeNeurons.load(tiny_model_dir, prompt=PROMPT, dtype="float32")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)  # H 40, W 56


def no_model_work(kn, monkeypatch):
    """Fail if the model runs: the errors come before any forward pass."""

    def forward(*args, **kwargs):
        raise AssertionError("the model ran before the argument was checked")

    monkeypatch.setattr(kn.loaded.model, "forward", forward)


OUTSIDE = r"^inpaint: the bear box \[x, y, w, h\] = \[200.0, 200.0, 30.0, 30.0\] lies more than 2 px outside the 56x40"


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([200, 200, 30, 30], OUTSIDE),
        ([10, 10, -5, 8], r"has a negative width or height"),
        ([10, 10, 0, 8], r"has zero area"),
        ([10, 5, 50, 38], r"if these are corners \(x1, y1, x2, y2\), pass box=\[10.0, 5.0, 40.0, 33.0\]"),
        ([1, 2, 3], r"expected four numbers \[x, y, w, h\]"),
    ],
)
def test_a_box_the_workflow_would_reject_is_one_line(kn, image, monkeypatch, box, message):
    no_model_work(kn, monkeypatch)
    with pytest.raises(KneuronsError, match=message) as err:
        kn.find(image, "bear", box=box)
    assert "\n" not in str(err.value)


def test_a_box_within_two_pixels_of_the_edge_is_clipped_as_the_workflow_does(kn, image):
    out = kn.inpaint(image, "bear", box=[40, 30, 17, 11])  # 1 px past the right and bottom edges
    assert out.shape == image.shape and not np.array_equal(out, image)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda kn: kn.ablate([(0, 9999)]), r"ablate: neuron \(0, 9999\) is not in this model: layers 0-1, units 0-"),
        (lambda kn: kn.ablate([(0, -1)]), r"ablate: neuron \(0, -1\) is not in this model"),  # no wrap-around
        (lambda kn: kn.noise([(7, 1)], 3.0), r"noise: neuron \(7, 1\) is not in this model: layers 0-1"),
        (lambda kn: kn.decode([(0, 1.5)]), r"decode: a neuron is a \(layer, unit\) pair of integers, got \(0, 1.5\)"),
        (lambda kn: kn.patch(["ab"], np.zeros((8, 8, 3), np.uint8)), r"patch: a neuron is a \(layer, unit\) pair"),
    ],
)
def test_a_neuron_outside_the_model_is_one_line(kn, monkeypatch, call, message):
    no_model_work(kn, monkeypatch)
    with pytest.raises(KneuronsError, match=message):
        call(kn)
    assert not kn._active


def test_a_sets_rows_are_neurons_too(kn):
    with kn.ablate([[0, 3, 0.5], [1, 2, 0.1]]):  # [layer, unit, score] as a set's JSON holds them
        assert len(kn._active) == 1


def test_one_image_is_a_list_of_one(kn, image, tmp_path):
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    (from_path,) = kn.caption(str(path), max_new_tokens=4)
    assert kn.caption(image, max_new_tokens=4) == [from_path] == kn.caption([path], max_new_tokens=4)


def test_a_word_not_in_the_caption_is_a_kneurons_error(kn, image, monkeypatch):
    no_model_work(kn, monkeypatch)
    with pytest.raises(KneuronsError, match=r"logprob: caption does not mention 'giraffe'"):
        kn.logprob(image, " a bear on the grass", "giraffe")


def finding(sets: dict) -> Finding:
    none = dict.fromkeys(["image", "inpainted", "layout", "original", "inpainted_activations", "candidates"])
    arrays = dict.fromkeys(["v_max", "g_max", "g_mean", "o_mean", "unit_logit", "ig"])
    return Finding("bear", 1, caption="a bear", caption_ids=None, inpainted_caption="grass", token="bear", sets=sets,
                   **none, **arrays)  # fmt: skip


def test_an_unknown_kind_lists_the_kinds(kn):
    found = finding({"ours": {"neurons": [[0, 1, 0.5]]}, "pan": {"neurons": []}})
    assert found.neurons("ours") == [(0, 1)]
    with pytest.raises(KneuronsError, match=r"kind 'random' is not one of this finding's sets: ours, pan"):
        found.neurons("random")
    with pytest.raises(KneuronsError, match=r"kind 'schwetmann' is not one of this finding's sets: ours, pan"):
        kn.heatmap(found, kind="schwetmann")


def test_a_box_that_leaves_k_named_says_k_still_present(kn, image, monkeypatch):
    """The workflow rejects a sample whose inpainted caption still names k; find says so instead of returning
    sets for a region that is not the object."""
    captions = [("a bear on the grass", [1, 2, 3]), ("a bear on the sand", [1, 2, 4])]
    monkeypatch.setattr(kneurons.api, "emitted_captions", lambda *a, **k: captions)
    with pytest.raises(
        KneuronsError, match=r"find: k still present: the inpainted image's caption 'a bear on the sand' still"
    ):
        kn.find(image, "bear", box=[8, 6, 20, 18])
