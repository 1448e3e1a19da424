"""The faces and the composition root: the HTTP gateway, the CLI with its commands, the operator
console, ``client`` (the HTTP client of the API that the CLI and the console share), and
``node``, which assembles a node from the platform, the actors and the drivers.

This is the only package that imports ``actors``. Nothing below it (the platform, the drivers,
the actors) imports it; the import contracts in ``pyproject.toml`` hold that.
"""
