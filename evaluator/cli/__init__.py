"""The ``atelier`` command: a root group whose sub-commands load only when called."""
