"""CLI commands, one module each; ``edgekd.cli`` imports every module here to register it."""
