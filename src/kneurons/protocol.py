"""How the model is asked and how every neuron set is tested: the captioning settings and the perturbation protocol,
each built once from the config and passed whole to the rules that use them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

# Light on purpose (no torch): rules/common.smk builds the protocol while the Snakefile is parsed, in every job.
NOISE, ABLATION = "noise", "ablation"


@dataclass(frozen=True)
class Perturbation:
    """One way to perturb a set: ``kind`` "noise" at ``level`` (a multiple of the reference scale) with ``seed``,
    or "ablation" (O = 0 at the image positions; level and seed unused)."""

    kind: str
    level: float = 0.0
    seed: int = 0

    @property
    def label(self) -> float | str:
        """The perturbation's name in the tables: the noise level, or "ablation"."""
        return self.level if self.kind == NOISE else self.kind


@dataclass(frozen=True)
class Protocol:
    """The perturbation settings, the same for every set kind: noise at ``levels`` (multiples of the run's
    reference scale when ``scale`` is "calibrated", activation units when "absolute") with ``seeds`` seeds each;
    zero-ablation if ``ablation``; restoration by activation patching if ``restoration``; and, if
    ``log_probability``, the teacher-forced log p of each image's own object's first token read in every
    caption's prompt pass."""

    levels: tuple[float, ...]
    seeds: int
    ablation: bool = True
    scale: str = "absolute"
    restoration: bool = True
    log_probability: bool = True

    @classmethod
    def from_config(cls, config: Mapping) -> Protocol:
        """The protocol of a (schema-validated) config: keys ``noise`` (scale, levels, seeds), ``zero_ablation``,
        ``restoration`` and ``log_probability``."""
        noise = config["noise"]
        return cls(
            levels=tuple(float(v) for v in noise["levels"]),
            seeds=int(noise["seeds"]),
            ablation=bool(config["zero_ablation"]),
            scale=str(noise.get("scale", "absolute")),
            restoration=bool(config.get("restoration", True)),
            log_probability=bool(config.get("log_probability", True)),
        )

    @classmethod
    def from_settings(cls, settings: Mapping) -> Protocol:
        """The protocol back from ``settings()`` (a job's params)."""
        return cls(**{**settings, "levels": tuple(settings["levels"])})

    def settings(self) -> dict:
        """The protocol as plain values (a rule's params: a change reruns what it governs)."""
        return asdict(self) | {"levels": list(self.levels)}

    def perturbations(self) -> list[Perturbation]:
        """Noise at every (level, seed), then zero-ablation if ``ablation``."""
        noise = [Perturbation(NOISE, float(level), seed) for level in self.levels for seed in range(self.seeds)]
        return noise + ([Perturbation(ABLATION)] if self.ablation else [])


@dataclass(frozen=True)
class Captioning:
    """What travels with every caption, log p and GradCAM: the ``prompt`` (with the processor's image placeholder),
    each knowledge's ``synonyms`` (name -> other words that count as a mention), and the greedy generation's
    ``max_new_tokens`` and ``batch_size`` (an int, or "auto": start large, halve on CUDA out-of-memory)."""

    prompt: str
    synonyms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_new_tokens: int = 32
    batch_size: int | str = 64

    @classmethod
    def from_params(cls, params: Mapping, knowledge: str | None = None) -> Captioning:
        """The settings of a job's params (``prompt``, and where the rule has them ``synonyms`` and
        ``generation``); a per-target rule gives its target's synonyms as a list, under ``knowledge``'s name."""
        synonyms = params.get("synonyms", {})
        if knowledge is not None:
            synonyms = {knowledge: list(synonyms)}
        return cls(params["prompt"], dict(synonyms), **params.get("generation", {}))

    def synonyms_of(self, knowledge: str) -> Sequence[str]:
        """The words besides ``knowledge`` that count as a mention of it."""
        return self.synonyms.get(knowledge, ())

    @property
    def generation(self) -> dict:
        """The greedy generation's keyword arguments (kneurons.generation)."""
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}


@dataclass(frozen=True)
class Editing:
    """How knowledge-level sets are built and edited: units shared by at least ``share`` of a knowledge's
    per-sample sets, at most ``budget`` (None: no cap), beside ``control_draws`` random controls; judged on up to
    ``heldout`` images of k and ``locality`` images without k per target, drawn with ``seed``; erased at the
    strengths ``erase`` (α), amplified at ``amplify`` (β), rewritten towards another word at ``rewrite`` (λ)."""

    share: float = 0.5
    budget: int | None = None
    control_draws: int = 2
    heldout: int = 8
    locality: int = 8
    seed: int = 0
    erase: tuple[float, ...] = (0.0,)
    amplify: tuple[float, ...] = ()
    rewrite: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping) -> Editing:
        """The settings of a (schema-validated) config's ``editing`` section (rewrite_to stays in the config)."""
        e = dict(config["editing"])
        e.pop("rewrite_to", None)
        return cls.from_settings(e)

    @classmethod
    def from_settings(cls, settings: Mapping) -> Editing:
        """The settings back from ``settings()`` (a job's params)."""
        ops = {op: tuple(float(v) for v in settings.get(op, ())) for op in ("erase", "amplify", "rewrite")}
        return cls(**{**settings, **ops})

    def settings(self) -> dict:
        """As plain values (a rule's params: a change reruns what it governs)."""
        return asdict(self) | {op: list(getattr(self, op)) for op in ("erase", "amplify", "rewrite")}

    def of(self, rule: str) -> dict:
        """The settings one editing rule reads (its params: a change reruns that rule and what depends on its
        files, nothing else): "split" the images, "sets" the aggregation, "eval" the edits."""
        keys = {"split": ("heldout", "locality", "seed"), "sets": ("share", "budget", "control_draws"),
                "eval": ("erase", "amplify", "rewrite")}[rule]  # fmt: skip
        return {k: v for k, v in self.settings().items() if k in keys}

    def edits(self) -> list[tuple[str, float]]:
        """Every (operation, strength) to apply, in order: erase, amplify, rewrite."""
        return [(op, s) for op in ("erase", "amplify", "rewrite") for s in getattr(self, op)]
