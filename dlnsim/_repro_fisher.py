"""Reproductions of the fisher paper's figures (filled in on its own branch)."""
