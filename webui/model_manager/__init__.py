"""Model manager: list what is on disk (catalogue.py, walking folders.py; identify checkpoints from their headers in
identify.py, LoRA files in lora_files.py; hash them in hashes.py; none of these import torch), load models
offline (loading.py, configs/), hold every loaded model under one memory policy (memory.py: byte budgets for the
device and RAM, least recently used first out, the running job's models pinned; cache.py moves checkpoints), and
reconcile what the engine asks for, one `LoadSpec` per pipeline call (spec.py, torch-free), with what is loaded
(manager.py). Importing this package loads nothing.
"""
