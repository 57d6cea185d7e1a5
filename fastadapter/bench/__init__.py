"""The bench and the demo: `fastadapter bench` (the paper's training-cost comparison re-measured here) and
`fastadapter demo`. Imported only by the CLI and the benchmarks, never by `import fastadapter`; its plot needs the
`bench` extra (matplotlib).

modes.py (what is compared), models.py (building and preparing BLIP), steps.py (measuring a mode, a pair),
direction.py (the statistics and verdicts), report.py (Markdown, plot), runner.py (a whole run), measure.py
(timing and memory helpers), data.py (Pillow-made image-caption batches), demo.py.
"""

from .models import OPTIMIZER, build_model, make_optimizer, prepare, setup_mode
from .modes import MODES, NOT_BUILT, PAPER, PRESETS, Preset, check_pair, parse_pairs
from .report import failures, markdown, plot, ratios
from .runner import run
from .steps import in_fresh_process, paired, run_mode

__all__ = ["OPTIMIZER", "build_model", "make_optimizer", "prepare", "setup_mode", "MODES", "NOT_BUILT", "PAPER",
           "PRESETS", "Preset", "check_pair", "parse_pairs", "failures", "markdown", "plot", "ratios", "run",
           "in_fresh_process", "paired", "run_mode"]
