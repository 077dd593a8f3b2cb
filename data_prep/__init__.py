"""Readers that turn raw tool-use traces into restlit's single-turn samples."""
