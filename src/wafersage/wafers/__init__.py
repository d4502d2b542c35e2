"""Wafer maps as data: encoding, taxonomy, raw table, loaders, synthesis, rendering, features, splits."""
