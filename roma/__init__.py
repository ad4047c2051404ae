"""RoMA scaling-law harness: Mamba encoders pretrained autoregressively on remote-sensing images."""
__version__ = "0.1.0"
