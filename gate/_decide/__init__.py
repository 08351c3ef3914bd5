"""Stage 4 (pure): metrics over rows, statistics, checks, regressions, and the status and exit-code rule."""
