"""Stage 7: the commands (run, compare, score, calibrate, validate): each gathers a record and builds the verdict."""
