"""The rule of rules/model.smk: a model directory converted from a family's released files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kneurons.convert import convert_model as convert


def convert_model(settings: Mapping, out_dir: str) -> Path:
    """Rule convert_model: the model directory ``out_dir`` made from the released files that ``settings`` (the
    config's model.convert: the family and its parts) names. Returns the directory."""
    return convert(settings, out_dir)
