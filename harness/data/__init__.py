"""Datasets bundled with the harness: a small synthetic PASCAL-VOC-format set with saliency maps."""
