"""rmaat_jax: Recurrent Memory Augmented Astromorphic Transformer (RMAAT) in JAX/Flax."""

__version__ = "0.1.0"
