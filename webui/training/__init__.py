"""LoRA training shared by the Train tab and `python3 launch.py train config.yaml`.

config.py (the YAML config as a frozen dataclass, its limits), folders.py (where a config may read and write),
dataset.py (images + captions, buckets, clear errors),
trainer.py (the loop for every family), cli.py (the command), example_dataset.py (the example concept's images).
Importing this package loads nothing heavy.
"""
