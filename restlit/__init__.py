"""restlit: ResT post-training of tool-using LLMs on PyTorch Lightning.

Importing the package imports nothing heavy: ``restlit.regions`` and ``restlit.toolcalls`` work without torch.
"""

__version__ = "0.1.0"
