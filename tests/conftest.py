import pytest


@pytest.fixture(scope="session")
def shell():
    """A real IPython InteractiveShell (terminal flavour), shared by the tests that need one."""
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()
