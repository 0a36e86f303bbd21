"""``python -m headpuppet`` (and ``torchrun -m headpuppet meta-train ...``)."""

from headpuppet.cli import main

if __name__ == "__main__":
    main()
