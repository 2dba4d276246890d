"""How a run is shown: report.md, terminal tables, charts, re-rendering stored runs."""
