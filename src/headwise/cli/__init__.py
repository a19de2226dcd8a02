"""The `headwise` command: one module per subcommand, gathered by `main`."""
