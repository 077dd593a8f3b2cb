"""A controlled tool-use testbed where ResT's mechanism can be measured (docs/testbed.md): synthetic tasks
(:mod:`.tasks`), a tokenizer trained on them (:mod:`.tokenizer`), the driver that runs restlit's own
commands on them (:mod:`.driver`), and the analysis of the results (:mod:`.analysis`)."""
