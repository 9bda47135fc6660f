"""The `ovdet` command line: thin argument parsing over library functions."""
