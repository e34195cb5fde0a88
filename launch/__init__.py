"""Entry points: `launch/pretrain.py` (DeepSpeed pretraining), `launch.evaluate`, `launch.pictures`, `launch.demo`."""
