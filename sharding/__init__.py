"""Ray job that turns raw shape corpora into WebDataset shards of surface-sampled point clouds."""
