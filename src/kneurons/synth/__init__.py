"""The embedded default: synthetic COCO-format scenes and a small LLaVA captioner trained on them."""
