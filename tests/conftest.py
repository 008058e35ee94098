"""Test-wide settings: a persistent XLA compilation cache so identical programs compile once."""

import os
import tempfile

import jax

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("LOPT_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "lopt-test-jax-cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
