"""Stage 5: calling the versions — targets prepared, calls planned and run, a session's rounds and repeats."""
