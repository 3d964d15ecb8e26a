"""Thin launcher: ``python app.py run ...`` is the same as ``dlnsim run ...``."""

from dlnsim._cli import main

if __name__ == "__main__":
    main()
