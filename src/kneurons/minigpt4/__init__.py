"""MiniGPT-4 (EVA ViT-g + linear projection + Llama-2, no Q-Former) as a transformers model of kneurons' own,
registered with the Auto classes on import so that a converted directory loads like any other family."""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from kneurons.minigpt4.configuration import MiniGPT4Config
from kneurons.minigpt4.modeling import MiniGPT4ForConditionalGeneration, MiniGPT4Model
from kneurons.minigpt4.processing import IMAGE_PLACEHOLDER, MiniGPT4Processor

AutoConfig.register(MiniGPT4Config.model_type, MiniGPT4Config, exist_ok=True)
AutoModelForImageTextToText.register(MiniGPT4Config, MiniGPT4ForConditionalGeneration, exist_ok=True)
AutoProcessor.register(MiniGPT4Config, MiniGPT4Processor, exist_ok=True)

__all__ = [
    "IMAGE_PLACEHOLDER",
    "MiniGPT4Config",
    "MiniGPT4ForConditionalGeneration",
    "MiniGPT4Model",
    "MiniGPT4Processor",
]
