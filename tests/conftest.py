import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles for the property tests (tests/test_properties.py,
# tests/test_streaming.py); max_examples applies to each parametrized case.
# "ci", the default, is derandomized: the same examples on every run and
# machine. "thorough" draws fresh random examples, 200 per case, by hand:
#     HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py
_PROFILE = dict(
    deadline=None,  # the first call of a new layer compiles; timings vary
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,  # _fresh_keras_state, per test
    ],
    print_blob=True,
)
settings.register_profile("ci", max_examples=12, derandomize=True, **_PROFILE)
settings.register_profile("thorough", max_examples=200, **_PROFILE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from the same seeds and the default dtype policy."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "float64: computes in float64; on JAX the test runs with jax_enable_x64, "
        "without which JAX silently truncates float64 to float32",
    )
    config.addinivalue_line(
        "markers",
        "one_backend: checks something that does not depend on the backend "
        "(a notebook, the README's quickstart, a test that starts the other "
        "backends itself); the README's test command runs it on TensorFlow "
        'only and deselects it on the others with -m "not one_backend"',
    )
    if keras.backend.backend() == "jax":
        _share_jax_compilations()


# On JAX, many tests compile the same computation again: the built-in half of
# each property test, the same layer in several tests, and the same test in
# both pytest-xdist workers. JAX's persistent compilation cache, keyed by the
# computation itself, lets them reuse one compilation, within one run only.
# The run's first process (the xdist controller) makes the folder; its workers,
# started after it, inherit the variable. The process that made the folder
# removes it when the run ends; a folder set from outside is left alone.
_JAX_CACHE = "KERAS_RECURRENT_TEST_JAX_CACHE"
_made_cache = None


def _share_jax_compilations():
    global _made_cache
    import jax

    if _JAX_CACHE not in os.environ:
        _made_cache = tempfile.mkdtemp(prefix="keras_recurrent_jax_")
        os.environ[_JAX_CACHE] = _made_cache
    jax.config.update("jax_compilation_cache_dir", os.environ[_JAX_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def pytest_unconfigure(config):
    if _made_cache is not None:
        shutil.rmtree(_made_cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def _float64_on_jax(request):
    if (
        keras.backend.backend() != "jax"
        or request.node.get_closest_marker("float64") is None
    ):
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _clear_session_per_module():
    # Per module, not per test: clear_session costs ~0.3 s each time.
    yield
    keras.backend.clear_session()
