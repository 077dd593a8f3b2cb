"""Training wiring: the LightningModule, DataModule, curriculum callback, SFT, optimizer, distributed helpers, gradient checkpointing, loggers, checkpoints, export and the fit/sft entry points."""
