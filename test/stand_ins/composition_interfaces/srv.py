"""``composition_interfaces.srv`` names (see the package docstring): not usable services."""


class LoadNode:
    """Stands for composition_interfaces/srv/LoadNode in annotations only."""

    class Request:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                'composition_interfaces is a stand-in: composable nodes cannot load'
            )

    class Response(Request):
        pass
