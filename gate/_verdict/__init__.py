"""Stage 6: the verdict — its schema (the public JSON) and its one pure builder."""
