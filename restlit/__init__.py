"""restlit: ResT post-training of tool-using LLMs on PyTorch Lightning.

Importing the package imports nothing heavy: ``restlit.regions``, ``restlit.toolcalls``,
``restlit.rewards``, ``restlit.prompts`` and ``restlit.config`` work without torch.

Layout: the method at the top (``regions``, ``callscan``, ``toolcalls``, ``prompts``, ``tokens``,
``objective``, ``rewards``, ``config``, ``models``), the machinery in sub-packages: ``kernels``,
``rollout``, ``training``, ``evaluation``, ``experiments``, ``report``, ``runtime``; ``cli`` and
``data_prep`` are the repository's top-level folders, installed under this package.
"""

from restlit import _moved

__version__ = "0.2.0"

_moved.install()
