"""Attack suites: membership inference and reconstruction, with honest metrics."""
