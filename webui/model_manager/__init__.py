"""Model manager: list what is on disk (catalogue.py, walking folders.py; identify checkpoints from their headers in
identify.py, LoRA files in lora_files.py; hash them in hashes.py; none of these import torch), load models
offline (loading.py, configs/), keep an LRU in RAM with one pipeline on the device (cache.py), and reconcile what
the engine asks for with what is loaded (manager.py). Importing this package loads nothing.
"""
