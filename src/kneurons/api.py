"""kneurons from Python: one object over a loaded VLM to explore one image at a time, through the same functions the
workflow's rules call (inpainting, captions, dumps' statistics, the two-stage filter, the baselines, the controls,
the perturbation hooks, the heatmaps, the decoded neurons).

    kn = KnowledgeNeurons.load("models/embedded-captioner")
    found = kn.find("bear.jpg", "bear", box=[12, 30, 40, 28])
    with kn.ablate(found.neurons("ours")):
        print(kn.caption(["bear.jpg"]))

Images are (H, W, 3) uint8 arrays, PIL images or file paths; a neuron is (layer, unit). Errors are the library's
one-line errors (kneurons.errors).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kneurons.captions import mentions
from kneurons.coco import Annotation, ImageRecord, read_image
from kneurons.dumps import TokenLayout, gradcam_at, image_activations, target_position, target_prefix
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.edit import Edit, edited, save_edited
from kneurons.errors import DataError, KneuronsError
from kneurons.figures import HeatmapPanel, heatmap_figure
from kneurons.generation import emitted_captions, generate_captions
from kneurons.inpaint import dilated, inpaint_mask, remove_objects
from kneurons.integrated import IG_STEPS, integrated_gradients
from kneurons.models import LoadedModel, load_model
from kneurons.neuronsets import IG_SHARE, sample_sets
from kneurons.perturb import checked_neurons, layer_units, noise_vector, patch_units, perturb_units
from kneurons.reporting import strongest
from kneurons.samples import Candidate, box_problem, constraint_failure
from kneurons.vocab import decode_neurons

Image = Any  # an (H, W, 3) uint8 array, a PIL image, or a path
Neuron = tuple[int, int]


def as_array(image: Image) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB: arrays are checked, PIL images converted, paths read as the workflow reads
    them (kneurons.coco.read_image: pixels as stored)."""
    if isinstance(image, str | os.PathLike):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise DataError(f"image: expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return array


def as_images(images: Image | Sequence[Image]) -> list[np.ndarray]:
    """A list of images, or one image (a path, a PIL image or an (H, W, 3) array) as a list of one."""
    if isinstance(images, str | os.PathLike) or hasattr(images, "convert") or np.ndim(images) == 3:
        return [as_array(images)]
    return [as_array(im) for im in images]


def checked_box(box: Sequence[float], shape: tuple[int, ...], name: str = "k") -> tuple[float, float, float, float]:
    """A COCO box [x, y, w, h] that the workflow would inpaint in an image of ``shape`` (H, W, 3): four numbers,
    positive width and height, at most 2 px past the image's edge (kneurons.samples.box_problem, the workflow's
    rule); KneuronsError otherwise, which says so when the four numbers read as corners (x1, y1, x2, y2) would fit."""
    values = [float(v) for v in np.ravel(np.asarray(box, dtype=float))] if np.size(box) == 4 else None
    if values is None:
        raise KneuronsError(f"box: expected four numbers [x, y, w, h] (COCO's box), got {box!r}")
    h, w = shape[:2]
    record = ImageRecord(0, Path(), h, w, ())
    problem = box_problem(record, Annotation(name, tuple(values)))
    if not problem:
        return tuple(values)
    x1, y1, x2, y2 = values
    corners = [x1, y1, x2 - x1, y2 - y1]
    hint = (
        ""
        if box_problem(record, Annotation("box", tuple(corners)))
        else (f"; if these are corners (x1, y1, x2, y2), pass box={[round(v, 2) for v in corners]}")
    )
    raise KneuronsError(f"inpaint: the {problem.replace(' (annotation 0)', '')}{hint}")


@dataclass(frozen=True)
class Settings:
    """What travels with every ``find``: the thresholds (a number is absolute, "q0.99" a quantile, as in the
    config), whether the last layer is left out, the inpainting (the workflow's Telea defaults) and the captions."""

    activation: float | str = "q0.99"
    gradcam: float | str = "q0.5"
    exclude_last_layer: bool = False
    dilate: int = 1
    radius: int = 3
    max_new_tokens: int = 32
    ig_steps: int = IG_STEPS
    ig_share: float = IG_SHARE

    @property
    def thresholds(self) -> dict:
        return {"activation": self.activation, "gradcam": self.gradcam}

    @classmethod
    def of_set(cls, ours: dict, **others: Any) -> Settings:
        """The thresholds and the last-layer rule a workflow's ours set was found with (the dict of
        ``results/neurons/ours/{k}/{image_id}.json``), so ``find`` reproduces the run's sets; ``others`` set the
        rest (dilate, radius, max_new_tokens)."""
        try:
            thresholds, excluded = ours["thresholds"], ours["excluded_layers"]
            activation, gradcam = thresholds["activation"], thresholds["gradcam"]
        except (KeyError, TypeError) as e:
            raise KneuronsError(f"Settings.of_set: not an ours set as the workflow writes it (no {e})") from None
        return cls(activation=activation, gradcam=gradcam, exclude_last_layer=bool(excluded), **others)


@dataclass(repr=False)
class Finding:
    """What ``find`` found for one image and knowledge k.

    ``sets[kind]`` holds each set exactly as the workflow writes ``results/neurons/{kind}/{k}/{image_id}.json`` (kinds:
    ours, schwettmann, pan, ig (Dai et al.'s integrated gradients, top-|N_k|), ours_stage1 and their ``_control``s, and
    ig_dai (Dai et al.'s own threshold); ours with C^k's size and the thresholds actually used). ``candidates`` (L,
    d_ff) bool is C^k; ``v_max`` = max_p V, ``g_max`` = max_p g, ``g_mean`` = mean_p g, ``o_mean`` = mean_p O',
    ``unit_logit`` = D[:, c], ``ig`` = Σ_p IG of P(c) are (L, d_ff); ``original`` and ``inpainted_activations`` are O'
    (L, P, d_ff); ``layout`` is the image's token layout (positions (P,), regions (P, 4)).
    """

    knowledge: str
    image_id: int
    image: np.ndarray
    inpainted: np.ndarray
    caption: str
    caption_ids: list[int] | None
    inpainted_caption: str
    token: str
    layout: TokenLayout
    original: np.ndarray
    inpainted_activations: np.ndarray
    candidates: np.ndarray
    v_max: np.ndarray
    g_max: np.ndarray
    g_mean: np.ndarray
    o_mean: np.ndarray
    unit_logit: np.ndarray
    ig: np.ndarray
    sets: dict[str, dict] = field(default_factory=dict)

    def neurons(self, kind: str = "ours") -> list[Neuron]:
        """The (layer, unit) pairs of one set kind, highest score first."""
        return [(int(layer), int(unit)) for layer, unit, _ in self.set(kind)["neurons"]]

    def set(self, kind: str) -> dict:
        """One set kind as the workflow writes it; KneuronsError listing the kinds for an unknown one."""
        if kind not in self.sets:
            raise KneuronsError(f"kind {kind!r} is not one of this finding's sets: {', '.join(self.sets)}")
        return self.sets[kind]

    def summary(self) -> str:
        """A few lines: the target, the image, both captions, C^k and each set kind's size and layers, the
        thresholds used."""
        ours = self.sets.get("ours", {})
        t = ours.get("thresholds", {})
        lines = [
            f"Finding: {self.knowledge!r} in image {self.image_id}, GradCAM target token {self.token!r}",
            f"  caption:           {self.caption!r}",
            f"  inpainted caption: {self.inpainted_caption!r}",
            f"  C^k: {int(self.candidates.sum()) if self.candidates is not None else '?'} candidates; thresholds: "
            f"activation {t.get('activation')} (= {t.get('activation_value')}), gradcam {t.get('gradcam')} "
            f"(= {t.get('gradcam_value')}), excluded layers {ours.get('excluded_layers', [])}",
        ]
        for kind, chosen in self.sets.items():
            layers = ", ".join(f"L{i}: {c}" for i, c in enumerate(chosen.get("layer_counts", [])) if c)
            lines.append(f"  {kind:<20} {len(chosen['neurons']):>4} neurons  ({layers or 'none'})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class Effect:
    """What perturbing a set does to one finding's image, beside its matched random control and the unperturbed
    model: each row's greedy caption, whether it names k, and the teacher-forced log p of k's first token on the
    finding's caption ids (the workflow's ``logp``)."""

    knowledge: str
    perturbation: str
    rows: dict[str, tuple[str, bool, float]]  # "none", the set kind, its control: (caption, names k, log p)

    def __repr__(self) -> str:
        width = max(len(label) for label in self.rows)
        lines = [f"Effect of {self.perturbation} on {self.knowledge!r} (names k, log p, caption):"]
        for label, (caption, named, logp) in self.rows.items():
            lines.append(f"  {label:<{width}}  {'yes' if named else 'no ':<3}  {logp:8.3f}  {caption!r}")
        return "\n".join(lines)


class KnowledgeNeurons:
    """A loaded VLM of any supported family with the method around it; perturbations are context managers whose
    hooks are always released, active around ``caption`` and ``logprob``."""

    def __init__(self, loaded: LoadedModel, prompt: str) -> None:
        self.loaded, self.prompt = loaded, prompt
        self._active: list = []  # each: input_ids (B, T) → a context manager editing that batch's prompt pass

    @classmethod
    def load(
        cls, path: str | os.PathLike, prompt: str = "<image>The image shows a", device: str = "cpu", dtype="auto"
    ) -> KnowledgeNeurons:
        """Load a local model directory (never from a hub) with its family's adapter; ``prompt`` holds the
        processor's image placeholder (e.g. config/models/*.yaml's prompts); ``dtype`` "auto" as the workflow's
        default (kneurons.models.model_dtype), so a notebook gets the workflow's numbers."""
        return cls(load_model(path, device=device, dtype=dtype), prompt)

    # captions and probabilities ------------------------------------------------------------------------------

    def _context(self, input_ids: torch.Tensor) -> ExitStack:
        stack = ExitStack()
        for make in self._active:
            stack.enter_context(make(input_ids))
        return stack

    def caption(
        self, images: Image | Sequence[Image], max_new_tokens: int = 32, batch_size: int | str = 64
    ) -> list[str]:
        """Greedy captions of ``images`` (batched; one image is a list of one), under every active perturbation
        (prompt pass only). More than one batch of images shows a progress bar (tqdm; ``TQDM_DISABLE=1`` hides
        it)."""
        pixels = as_images(images)
        step = batch_size if isinstance(batch_size, int) else 64
        chunks = [pixels[i : i + step] for i in range(0, len(pixels), step)]
        out: list[str] = []
        quiet = {"disable": True} if len(chunks) < 2 else {}  # else tqdm's default, which TQDM_DISABLE=1 overrides
        for chunk in tqdm(chunks, desc="captions", unit="batch", **quiet):
            out += generate_captions(self.loaded, chunk, self.prompt, max_new_tokens, batch_size, self._context)
        return out

    @torch.inference_mode()
    def logprob(
        self,
        image: Image,
        caption: str,
        word: str,
        synonyms: Sequence[str] = (),
        caption_ids: Sequence[int] | None = None,
    ) -> float:
        """Teacher-forced log p of ``word``'s first token at the position that predicts it after the prompt (the
        position GradCAM uses), under every active perturbation. With ``caption_ids`` (e.g. a Finding's: the ids
        the model emitted; ``caption`` their stripped text) exactly those ids are scored. Without them the text
        is scored exactly as given, ``prompt + caption``: a caption that continues "The image shows a" with a word
        starts with its space (" bear on grass"), one that continues a word does not ("n elephant"); nothing is
        inserted."""
        try:
            inputs, j = target_position(self.loaded, as_array(image), self.prompt, caption, word, synonyms, caption_ids)
        except ValueError as e:
            raise KneuronsError(f"logprob: {e}") from None
        with self._context(inputs["input_ids"]):
            logits = self.loaded.model(**inputs, position_ids=self.loaded.positions(inputs)).logits
        return float(torch.log_softmax(logits[0, j - 1].float(), dim=-1)[inputs["input_ids"][0, j]])

    # perturbations ---------------------------------------------------------------------------------------------

    @contextmanager
    def _while(self, make) -> Iterator[None]:
        self._active.append(make)
        try:
            yield
        finally:
            self._active.remove(make)

    def _neurons(self, neurons: Sequence[Sequence], where: str) -> list[Neuron]:
        return checked_neurons(self.loaded, neurons, where)

    def _units(self, neurons: Sequence[Sequence], where: str) -> list[np.ndarray]:
        return layer_units(self._neurons(neurons, where), self.loaded.n_layers)

    def noise(self, neurons: Sequence[Sequence], level: float, seed: int = 0, scale: float = 1.0):
        """While active, add level · scale · z (z ~ N(0, I_P) from ``seed``, the workflow's noise) to O' of
        ``neurons`` at every image position."""
        units = self._units(neurons, "noise")

        def make(ids: torch.Tensor):
            counts = self.loaded.image_positions(ids).sum(dim=1).tolist()
            noise = np.concatenate([noise_vector(level * scale, seed, p) for p in counts])
            return perturb_units(self.loaded, ids, units, torch.ones(len(counts)), torch.from_numpy(noise))

        return self._while(make)

    def ablate(self, neurons: Sequence[Sequence]):
        """While active, O' = 0 for ``neurons`` at every image position (zero-ablation)."""
        units = self._units(neurons, "ablate")

        def make(ids: torch.Tensor):
            n = int(self.loaded.image_positions(ids).sum())
            return perturb_units(self.loaded, ids, units, torch.zeros(ids.shape[0]), torch.zeros(n))

        return self._while(make)

    def patch(self, neurons: Sequence[Sequence], source_image: Image):
        """While active, O' of ``neurons`` at every image position is set to its value on ``source_image``
        (activation patching: e.g. the original's values into the inpainted image, which has the same P)."""
        units = self._units(neurons, "patch")
        ((source, _),) = image_activations(self.loaded, [as_array(source_image)], self.prompt)  # (L, P, d_ff)
        values = [torch.from_numpy(np.ascontiguousarray(source[layer][:, u])) for layer, u in enumerate(units)]
        return self._while(lambda ids: patch_units(self.loaded, ids, units, values))

    def effect(
        self,
        finding: Finding,
        kind: str = "ours",
        perturbation: str = "ablation",
        level: float = 0.0,
        seed: int = 0,
        scale: float = 1.0,
        synonyms: Sequence[str] = (),
    ) -> Effect:
        """One call for a set's effect on the finding's image, beside its random control (``kind + "_control"``)
        and the unperturbed model: "ablation" and "noise" (``level`` · ``scale``, ``seed``; the run's scale is
        ``reference_scale`` in results/perturb/noise_scale.json) on the original image, "patch" (the set's
        original activations into the inpainted image: does k come back?)."""
        kinds = [kind] if kind.endswith("_control") else [kind, f"{kind}_control"]
        for k in kinds:
            finding.set(k)
        if perturbation == "patch":
            image, make = finding.inpainted, lambda units: self.patch(units, finding.image)
        elif perturbation == "ablation":
            image, make = finding.image, self.ablate
        elif perturbation == "noise":
            image, make = finding.image, lambda units: self.noise(units, level, seed, scale)
        else:
            raise KneuronsError(f"effect: perturbation {perturbation!r} is not one of ablation, noise, patch")

        def row() -> tuple[str, bool, float]:
            (caption,) = self.caption(image)
            named = mentions(caption, finding.knowledge, synonyms)
            logp = self.logprob(image, finding.caption, finding.knowledge, synonyms, finding.caption_ids)
            return caption, named, logp

        rows = {"none": row()}
        for k in kinds:
            with make(finding.neurons(k)):
                rows[k] = row()
        name = perturbation if perturbation != "noise" else f"noise (level {level:g}, scale {scale:g}, seed {seed})"
        return Effect(finding.knowledge, name, rows)

    # editing the weights ---------------------------------------------------------------------------------------

    def edited(self, neurons: Sequence[Sequence], op: str, strength: float, source: str = "", target: str = ""):
        """While active, ``neurons``' FFN output columns (W_down) are edited in the weights (kneurons.edit): "erase"
        (× α), "amplify" (× β) or "rewrite" (moved from the word ``source`` towards ``target`` by λ of each
        column's norm), at every position and every decoding step of every call; restored bit for bit on exit."""
        units = self._neurons(neurons, "edited")
        return edited(self.loaded, units, Edit(op, strength, source, target), "edited")

    def save_edited(
        self, path: str | os.PathLike, neurons: Sequence[Sequence], op: str, strength: float, source: str = "",
        target: str = "",
    ) -> Path:  # fmt: skip
        """Write the model with ``neurons`` edited as ``edited`` does to a new directory (with the processor), which
        plain transformers loads; the model in memory stays as it was."""
        units = self._neurons(neurons, "save_edited")
        return save_edited(self.loaded, path, units, Edit(op, strength, source, target), "save_edited")

    # finding ---------------------------------------------------------------------------------------------------

    def inpaint(self, image: Image, knowledge: str, box=None, mask=None, settings: Settings = Settings()) -> np.ndarray:
        """``image`` with k removed by cv2's Telea inpainting (the workflow's settings): from a COCO box [x, y, w,
        h] or an (H, W) mask (nonzero inside), grown by ``settings.dilate`` px."""
        pixels = as_array(image)
        if (box is None) == (mask is None):
            raise KneuronsError("inpaint: give exactly one of box=[x, y, w, h] or mask=(H, W) array")
        if box is not None:
            ann = Annotation(knowledge, checked_box(box, pixels.shape, knowledge))
            return remove_objects(pixels, [ann], "box", settings.dilate, settings.radius)
        mask = np.asarray(mask)
        if mask.shape != pixels.shape[:2]:
            raise DataError(f"mask: shape {mask.shape} differs from the image's {pixels.shape[:2]}")
        return inpaint_mask(pixels, dilated((mask > 0).astype(np.uint8) * 255, settings.dilate), settings.radius)

    def find(
        self,
        image: Image,
        knowledge: str,
        box: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        inpainted: Image | None = None,
        caption: str | None = None,
        settings: Settings = Settings(),
        synonyms: Sequence[str] = (),
        image_id: int = 0,
    ) -> Finding:
        """k's knowledge neurons in one image: k removed (``box`` or ``mask``, or an ``inpainted`` image given), both
        images captioned (``caption`` replaces the original's), O' of both, GradCAM on the logit of k's first caption
        token (read on the ids the model emitted; a ``caption`` given is scored as written after the prompt, as
        ``logprob`` does), C^k and N_k, Schwettmann's, Pan's and integrated gradients' top-|N_k|, Dai et al.'s own IG
        selection and each method's random control (seeded by method, knowledge and ``image_id``), exactly as the
        workflow computes them."""
        pixels = as_array(image)
        if inpainted is None:
            removed = self.inpaint(pixels, knowledge, box, mask, settings)
        elif box is None and mask is None:
            removed = as_array(inpainted)
        else:
            raise KneuronsError("find: give one of box=, mask= or inpainted=, not several")
        captions = emitted_captions(self.loaded, [pixels, removed], self.prompt, settings.max_new_tokens)
        text, ids = captions[0] if caption is None else (caption, None)
        judged = Candidate(knowledge, image_id, "", caption=text, inpainted_caption=captions[1][0])
        if constraint_failure(judged, synonyms) == "k still present":
            raise KneuronsError(
                f"find: k still present: the inpainted image's caption {captions[1][0]!r} still names {knowledge!r}, "
                "so the workflow would reject this sample; check that the box or mask covers the object"
            )
        (original, layout), (after, _) = image_activations(self.loaded, [pixels, removed], self.prompt)
        if original.shape != after.shape:
            raise DataError(f"inpainted: {after.shape[1]} image tokens against the original's {original.shape[1]}")
        try:
            target = target_prefix(self.loaded, pixels, self.prompt, text, knowledge, synonyms, ids)
            cam = gradcam_at(self.loaded, target)
        except ValueError as e:
            raise KneuronsError(f"find: {e}; pass caption= with a caption that names it") from None
        ig = integrated_gradients(self.loaded, target, settings.ig_steps)
        stats = activation_record(original, after, "compact", 0.0) | gradcam_record(
            cam.gradcam, cam.unit_logit, "compact", ig
        )
        sets, cand = sample_sets(
            stats, settings.thresholds, settings.exclude_last_layer, knowledge, image_id, settings.ig_share
        )
        return Finding(
            knowledge=knowledge,
            image_id=image_id,
            image=pixels,
            inpainted=removed,
            caption=text,
            caption_ids=ids,
            inpainted_caption=captions[1][0],
            token=cam.token,
            layout=layout,
            original=original,
            inpainted_activations=after,
            candidates=cand,
            v_max=stats["v_max"],
            g_max=stats["g_max"],
            g_mean=stats["g_mean"],
            o_mean=stats["o_mean"],
            unit_logit=stats["unit_logit"],
            ig=stats["ig"],
            sets=sets,
        )

    # looking ---------------------------------------------------------------------------------------------------

    def heatmap(self, finding: Finding, kind: str = "ours", top: int = 5, order: str = "set"):
        """Fig. 3 for one finding: the top-``top`` neurons of a set, their mean O' over the image and each one's O',
        on the pixels each token covers. ``order`` "set": the set's own order, as ``finding.neurons(kind)`` lists
        them (ours: max_p GradCAM); "activation": by max_p V, as the workflow's heatmap figures. A matplotlib
        Figure."""
        chosen = finding.set(kind)["neurons"]
        orders = {
            "set": lambda: finding.neurons(kind)[:top],
            "activation": lambda: strongest(chosen, finding.v_max, top),
        }
        if order not in orders:
            raise KneuronsError(f"heatmap: order {order!r} is not one of {', '.join(orders)}")
        neurons = orders[order]()
        by = {"set": finding.set(kind).get("score", "the set's score"), "activation": "max_p V"}[order]
        panel = HeatmapPanel(
            title=f"{finding.knowledge} ({kind}, |set| = {len(chosen)})",
            image=finding.image,
            neurons=neurons,
            traces=[finding.original[layer, :, unit].astype(np.float32) for layer, unit in neurons],
            regions=finding.layout.regions,
        )
        return heatmap_figure([panel], top, f"{finding.knowledge}: activation O' of the top-{top} neurons by {by}")

    def decode(self, neurons: Sequence[Sequence], top: int = 5) -> list[list[str]]:
        """The ``top`` tokens W_U · W_down[:, i] promotes for each neuron (layer, unit)."""
        return decode_neurons(self.loaded, self._neurons(neurons, "decode"), top)
