"""The `apothic` command line, one file per noun."""
