"""The models trained on the sample world and committed with the package: their names and files, torch-free.

``--clip-model sample`` loads :data:`SAMPLE_CHECKPOINT` (``maskmine pretrain-sample-clip`` writes
it), ``--proposal-checkpoint sample`` :data:`SAMPLE_PROPOSAL_DIR` (``maskmine
pretrain-sample-proposals``); the trainers' parsers take them as defaults without importing torch.
"""
from __future__ import annotations

from pathlib import Path

SAMPLE_MODEL_NAME = "maskmine-sample"  # the open_clip config of the sample CLIP (model_configs/)
SAMPLE_CHECKPOINT = Path(__file__).parent / "checkpoints" / "maskmine-sample.pt"
# the small class-agnostic Mask2Former trained on the sample world, a save_pretrained folder
SAMPLE_PROPOSAL_DIR = Path(__file__).resolve().parent / "checkpoints" / "maskmine-sample-proposals"
