"""Two-stage open-vocabulary semantic segmentation and its metrics."""
