"""Stage 2: the MLflow write path — the store and experiment, the trace writer, span redaction, the store template."""
