"""The configs: composing them outside a Hydra run, the resolvers they use, instantiating their
nodes with errors that name the key, and the schema checks of a composed config."""

from unet_lab.config.compose import compose_config, compose_train_config, instantiate

__all__ = ["compose_config", "compose_train_config", "instantiate"]
