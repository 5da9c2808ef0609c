"""quantgate: build int8 artifacts for a CPU target and verify them on that target's CPUs."""
import warnings

# conf/hydra/launcher/{joblib,submitit_*,ray}.yaml share their names with the launcher plugins' own
# entries, so Hydra 1.3 validates them against the plugin's schema (useful: typos fail) and warns,
# in the sweep's parent and in every worker, that this matching is deprecated. Here, because the
# workers import this package before Hydra loads their config.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema",
                        category=UserWarning)
