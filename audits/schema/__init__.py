"""Package data: the versioned JSON Schema of report.json (a package so wheels ship it)."""
