"""Offline evaluation of tool-use models: BFCL's AST categories and the held-out split.

* :mod:`restlit.evaluation.ast_checker` - BFCL's AST rules as pure functions, verdicts with reasons;
* :mod:`restlit.evaluation.bfcl` - BFCL data from the ``bfcl-eval`` package, prompts, scoring;
* :mod:`restlit.evaluation.heldout` - the validation split of a prepared dataset;
* :mod:`restlit.evaluation.run` - suites, predictions or generation, summaries and ``eval.json``.

Nothing here imports torch at module level; generation loads it only when a model is used.
"""
