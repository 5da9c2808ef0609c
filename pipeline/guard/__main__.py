"""`python -m pipeline.guard PATH` / `python -m quantgate_guard PATH`: see cli.py."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
