"""Volumes (3D): reading and writing NIfTI, NRRD, MHA and TIFF stacks with their geometry,
preprocessing once into a cache, and training on patches sampled from it."""
