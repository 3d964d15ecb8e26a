"""Reproductions of the curvature paper's figures (filled in on its own branch)."""
