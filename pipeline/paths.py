"""Where quantgate's checkout keeps things. The app runs from its checkout (Makefile, .venv), so these
are paths inside it; only the guard (pipeline/guard/) is installed elsewhere, and it uses none of them."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"  # Hydra's config groups; conf/cpu/ holds the CPU profiles
