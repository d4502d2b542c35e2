"""Serving a trained model: map files and data URLs to images, the predictor, ``wafersage ask``,
and the OpenAI-compatible HTTP server (``wafersage serve``)."""
