"""The `digits` command: one entry point whose subcommands import their side lazily,
so `digits submit` never loads torch and `digits train` never loads Flask."""
