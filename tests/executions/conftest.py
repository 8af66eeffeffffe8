from tests.engine.conftest import drain

__all__ = ["drain"]
