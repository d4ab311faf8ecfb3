"""Figures, decoded neurons and example captions (the report's rules) on hand-made inputs and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import docutils.core
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kneurons.families import grid_regions
from kneurons.figures import Bar, HeatmapPanel, layer_shares, plot_heatmaps, plot_layer_distribution, plot_restoration
from kneurons.io import read_tsv_rows
from kneurons.models import load_model
from kneurons.reporting import example_level
from kneurons.rules.figures import examples
from kneurons.samples import Candidate, write_tsv
from kneurons.vocab import decode_neurons, top_tokens


def test_top_tokens_known_answer():
    # W_U (V=4, d=2), W_down (d=2, d_ff=3): unit 0 writes e0, unit 1 writes e1, unit 2 writes -e0
    w_u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.5]])
    down = [torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])]
    assert top_tokens(w_u, down, [(0, 0), (0, 1), (0, 2)], top=2) == [[0, 3], [1, 3], [2, 1]]


def test_decode_neurons_matches_the_unembedding_product(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    neurons = [(1, 3), (0, 7), (1, 0)]
    tokens = decode_neurons(loaded, neurons, top=5)
    # the oracle reads the saved weights themselves: W_U and each layer's W_down from model.safetensors
    weights = load_file(tiny_model_dir / "model.safetensors")
    assert json.loads((tiny_model_dir / "config.json").read_text())["text_config"]["tie_word_embeddings"]
    w_u = weights["language_model.model.embed_tokens.weight"]  # tied: the output embedding is the input one
    tok = loaded.processor.tokenizer
    for (layer, unit), got in zip(neurons, tokens, strict=True):
        down = weights[f"language_model.model.layers.{layer}.mlp.down_proj.weight"]
        ids = np.argsort(-(w_u.double() @ down[:, unit].double()).numpy(), kind="stable")[:5].tolist()
        # a word-level vocabulary: every token is a whole word, written after a space in any text
        special = set(tok.all_special_ids)  # special tokens as they are
        assert got == [
            tok.convert_ids_to_tokens(i) if i in special else "␣" + tok.convert_ids_to_tokens(i) for i in ids
        ]
        assert len(got) == 5


def test_layer_shares_sum_to_one_and_empty_is_zero():
    shares = layer_shares({"ours": [1, 3, 0], "none": [0, 0, 0]})
    np.testing.assert_allclose(shares["ours"], [0.25, 0.75, 0.0])
    assert shares["none"].sum() == 0


def test_figures_are_png_files(tmp_path):
    plot_layer_distribution({"ours": [1, 2, 3], "pan": [0, 0, 6]}, tmp_path / "layers.png")
    image = np.full((48, 48, 3), 200, np.uint8)
    regions = grid_regions(8, 8, (0, 0, 48, 48))
    panel = HeatmapPanel("image 1", image, [(0, 1), (1, 2)], [np.arange(64.0), -np.arange(64.0)], regions)
    plot_heatmaps([panel], 5, "bear", tmp_path / "heat.png")
    plot_heatmaps([], 5, "nothing selected", tmp_path / "empty.png")
    for name in ("layers.png", "heat.png", "empty.png"):
        img = cv2.imread(str(tmp_path / name))
        assert img is not None and img.shape[0] > 50 and img.shape[1] > 50
    assert not list(tmp_path.glob(".*tmp*"))


def test_example_level():
    assert example_level([40, 80, 120], None) == 80.0
    assert example_level([4, 25], None) == 25.0
    assert example_level([40, 80, 120], 120) == 120.0
    with pytest.raises(ValueError, match="example_level"):
        example_level([40, 80, 120], 50)


def test_examples_pick_the_sample_own_set_at_the_level_and_seed_0(tmp_path):
    write_tsv(
        tmp_path / "selected.tsv",
        [
            Candidate("bear", 5, "x", caption="a bear", inpainted_caption="a field", status="selected"),
            Candidate("bear", 2, "x", caption="a bear on grass", inpainted_caption="grass", status="selected"),
            Candidate("bus", 9, "x", caption="a bus", inpainted_caption="a road", status="rejected"),
        ],
    )

    def ln(method, set_id, image_id, level, seed, caption):
        return {"method": method, "knowledge": "bear", "set": set_id, "image_id": image_id, "level": level,
                "seed": seed, "caption": caption}  # fmt: skip

    lines = [
        ln("ours", 2, 2, 80, 0, "grass"),
        ln("ours", 2, 2, 80, 1, "wrong seed"),
        ln("ours", 2, 2, 40, 0, "wrong level"),
        ln("ours", 5, 2, 80, 0, "another set"),
        ln("pan", 2, 2, 80, 0, "a bear on grass"),
    ]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    examples([str(jsonl)], str(tmp_path / "selected.tsv"), ["ours", "pan", "ours_control"], 80.0,
                   str(tmp_path / "ex.csv"), str(tmp_path / "ex.md"))  # fmt: skip
    rows = read_tsv_rows(tmp_path / "ex.csv", delimiter=",")
    assert rows == [
        {
            "knowledge": "bear",
            "image_id": "2",
            "original": "a bear on grass",
            "inpainted": "grass",
            "ours": "grass",
            "pan": "a bear on grass",
            "ours_control": "",
        }
    ]
    assert "noise level 80" in (tmp_path / "ex.md").read_text()


@pytest.mark.parametrize("caption", sorted((Path(__file__).parents[1] / "report").glob("*.rst")), ids=lambda p: p.name)
def test_report_captions_render_without_docutils_messages(caption):
    """Snakemake renders each caption with docutils: "|N_k|" unescaped is a substitution reference, and the report's
    page showed "Docutils System Messages: Undefined substitution referenced" under it."""
    html = docutils.core.publish_string(
        caption.read_text(), writer="html", settings_overrides={"halt_level": 5, "warning_stream": False}
    ).decode()
    assert "System Message" not in html


def test_the_restoration_figure_draws_empty_and_undefined_scores(tmp_path):
    """No patched set (no bar) and scores without a value (NaN, e.g. no log p) still give a figure, labelled."""
    nan = float("nan")
    bars = [Bar("ours", (nan, nan, nan), False, 3), Bar("ours_control", (0.0, 0.0, 0.0), True, 3)]
    plot_restoration({"S_rest": bars, "gap_closed": []}, tmp_path / "restoration.png")
    plot_restoration({"S_rest": [Bar("floor", (0.0, 0.0, 0.0), False, 0)]}, tmp_path / "zero.png")
    for name in ("restoration.png", "zero.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
