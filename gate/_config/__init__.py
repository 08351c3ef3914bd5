"""Stage 1: ``thresholds.yaml`` and the cases it names, validated into frozen records (and their fingerprints)."""
