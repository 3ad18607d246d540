"""Reports on top of federated results: plots (PNG, SVG) for papers and dashboards."""

from consortia.reports.plots import FOREST_COLUMNS, forest_plot, kaplan_meier_plot, save_figure

__all__ = ["FOREST_COLUMNS", "forest_plot", "kaplan_meier_plot", "save_figure"]
