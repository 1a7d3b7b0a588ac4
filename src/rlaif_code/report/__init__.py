"""Report stage: a Markdown file and one self-contained HTML file from a run directory."""

from rlaif_code.report.stage import ReportConfig, run

__all__ = ["ReportConfig", "run"]
