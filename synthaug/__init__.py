"""synthaug: grow small labelled medical image sets with diffusion models, and measure whether it helps."""

__version__ = "0.1.0"
