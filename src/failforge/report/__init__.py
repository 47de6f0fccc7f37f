"""Self-contained HTML reports of runs, comparisons of several, and run summaries."""

from failforge.report.html import render_report, write_report
from failforge.report.summary import RunSummary, list_runs, summarize_run

__all__ = ["RunSummary", "list_runs", "render_report", "summarize_run", "write_report"]
