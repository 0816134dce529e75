"""Configuration both sides read: one YAML file with ``TG_*`` environment overrides."""
