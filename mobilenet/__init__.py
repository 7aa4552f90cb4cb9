"""The application layer: the command line, the trainer, the apps, checkpoints and the summary."""

__version__ = "0.1.0"
