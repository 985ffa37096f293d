"""Settings of what an evaluation reports: neighbours shown and counted, the reports folder."""
from __future__ import annotations

from common.argtypes import positive_int
from common.settings import BOTH, EVALUATE, Setting

GROUP = "reports"

REPORT_SETTINGS = (
    Setting(("--num_neighbours",), default=5, type=positive_int, group=GROUP, front_ends=BOTH,
            param="reports.num_neighbours",
            help="neighbours per query in figures, and k of in_any@k / closest[1..k]"),
    Setting(("--reports_dir",), default=None, group=GROUP, front_ends=EVALUATE, param="reports.root",
            help="also write DIR/metrics.json, DIR/training_curves.csv and DIR/plots/*.png "
                 "(training curves, embedding plot) here"),
    Setting(("--projection",), default="tsne", choices=("tsne", "pca"), group=GROUP, front_ends=EVALUATE,
            param="reports.projection",
            help="2-D projection of the embedding plot in --reports_dir (t-SNE: ~2 s for 365 images)"),
)
