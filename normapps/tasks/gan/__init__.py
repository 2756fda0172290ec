"""GANs whose normalization is a config choice: DCGAN-style and SN-GAN ResNet G/D, spectral,
batch, layer and weight norm in D, batch/conditional/self-modulated BN in G."""
from normapps.tasks.gan.module import GANModule

__all__ = ["GANModule"]
