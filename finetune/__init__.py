"""CLIP finetuning on mined shards: full finetuning and mask prompt tuning."""
