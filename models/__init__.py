"""Networks only: they import nothing from tools/ (as nanoGPT's model.py and DiT's models.py)."""


class ModelConfigError(ValueError):
    """A network was asked for a configuration it cannot build; main.py prints it as one clear line."""
