"""Configuration: a typed tree loaded once from TOML and `--set key=value` overrides."""
