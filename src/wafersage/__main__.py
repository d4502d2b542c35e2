"""``python -m wafersage`` (what ``accelerate launch -m wafersage <stage>`` runs)."""

from wafersage.cli import main

main()
