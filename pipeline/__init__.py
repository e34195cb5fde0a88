"""Streaming input pipeline: WebDataset shards -> multi-crop augmentation -> fixed-shape batches."""
