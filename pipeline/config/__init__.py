"""The build's configuration: the schema (pipeline/config/schema.py, the only home of defaults), composing
it (compose.py) and the rules between its values (rules.py)."""
from pipeline.config.compose import CONF_DIR, compose_config
from pipeline.errors import QuantgateError  # importable from here, where it used to live

__all__ = ["CONF_DIR", "QuantgateError", "compose_config"]
