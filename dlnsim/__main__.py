"""``python -m dlnsim ...`` is the same as the ``dlnsim`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
