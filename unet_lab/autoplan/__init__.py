"""Autoplan: a recipe from a data set's fingerprint and the machine (``unet-lab autoplan``)."""
