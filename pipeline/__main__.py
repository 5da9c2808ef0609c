"""`python -m pipeline [options] [key=value ...]`: the Hydra app (= `quantgate build`), for Hydra users."""
from pipeline.commands.build import main

if __name__ == "__main__":
    raise SystemExit(main())
