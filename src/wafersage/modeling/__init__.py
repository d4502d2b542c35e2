"""Model building blocks shared by the vision pretraining and the VLM stages.

Importing this package registers the torchvision-free Qwen3-VL processor with ``AutoProcessor``
(see ``processor``), so plain ``AutoProcessor.from_pretrained("models/base")`` works afterwards.
"""

from wafersage.modeling import processor as _processor  # noqa: F401  (registers with AutoProcessor)
