"""Command-line entry points: `gptoss <command>`; each command is a module with add_arguments() and run()."""
