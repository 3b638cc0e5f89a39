"""Built-in backends: ``memory://`` and ``sqlite:///path`` (the embedded default).

They register through the same ``statekit_register_backends`` hook as any plugin.
"""
