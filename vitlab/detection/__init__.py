"""Object detection with DETR: COCO-format and synthetic data, joint transforms, padded batches,
the training / evaluation loop, COCO mAP, and the orchestration behind ``vitlab detect``."""
