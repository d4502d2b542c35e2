"""wafersage: a reproducible on-premise wafer-map vision-language model pipeline."""

__version__ = "0.1.0"
