"""Reproductions of the exactng paper's figures (filled in on its own branch)."""
