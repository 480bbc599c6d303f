from tests.hooks.conftest import set_connection  # noqa: F401
