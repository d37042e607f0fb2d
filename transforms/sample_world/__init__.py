"""The sample world: generated scenes, captions and COCO files for running maskmine offline."""
