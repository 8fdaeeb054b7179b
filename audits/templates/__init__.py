"""Package data: the jinja2 templates of the HTML report (a package so wheels ship them)."""
