"""Entry point module: registers components."""
