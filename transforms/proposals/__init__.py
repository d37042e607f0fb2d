"""Class-agnostic mask proposal backends (coco-gt, maskformer, sam)."""
