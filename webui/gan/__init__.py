"""Easel's own StyleGAN2 and StyleGAN3 generators: the layers (ops.py), the two synthesis networks and their shared
mapping network (stylegan2.py, stylegan3.py), building one from a file's tensors (build.py) and the pipeline that turns
seeds into images and seed walks (pipeline.py). Importing this package loads nothing."""
