"""Autoencoder recommenders: Mult-VAE and Mult-DAE (shared network, loss and training loop)."""

from recsys.models.autoencoders.multvae import (
    MultDAE,
    MultDAEConfig,
    MultVAE,
    MultVAEConfig,
    MultVAENet,
    beta_at,
    kl_divergence,
    multinomial_nll,
    vae_loss,
)

__all__ = [
    "MultDAE",
    "MultDAEConfig",
    "MultVAE",
    "MultVAEConfig",
    "MultVAENet",
    "beta_at",
    "kl_divergence",
    "multinomial_nll",
    "vae_loss",
]
