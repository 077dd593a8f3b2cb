"""restlit: ResT post-training of tool-using LLMs on PyTorch Lightning.

Importing the package imports nothing heavy: ``restlit.regions`` works without torch.
"""

__version__ = "0.1.0"
