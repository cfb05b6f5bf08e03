"""Everything after the metrics: run folders, tables, comparison, the CI gate, reports, submission files."""
