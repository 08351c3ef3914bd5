"""Stage 3: traces read back and reduced to rows — matching calls to traces, selections, stored sessions, scoring."""
