import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from the same seeds and the default dtype policy."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)


@pytest.fixture(autouse=True, scope="module")
def _clear_session_per_module():
    # Per module, not per test: clear_session costs ~0.3 s each time.
    yield
    keras.backend.clear_session()
