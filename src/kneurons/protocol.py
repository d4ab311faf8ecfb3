"""How every neuron set is tested, built once from the config and passed whole to the rules that run it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

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
