"""Model manager: identify checkpoints from their headers (identify.py), hash them (hashes.py), load them offline
(loading.py, configs/), keep an LRU in RAM with one pipeline on the device (cache.py), and reconcile what the
engine asks for with what is loaded (manager.py). Importing this package loads nothing.
"""
