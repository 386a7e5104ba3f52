"""Data: the synthetic VOC-format set, labelled splits, fingerprints, VOC/COCO prepare and check."""
