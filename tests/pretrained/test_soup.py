"""lopt.pretrained.soup: the mean of several theta files, written as a digest-checked theta file."""

import os

import jax
import numpy as np
import pytest

from lopt.learned import MLPLOpt, NominalLOpt, load_theta, save_theta
from lopt.pretrained import soup


def _write(folder, name, arch, theta):
    path = os.path.join(folder, f"{name}.safetensors")
    save_theta(path, arch, theta)
    return path


def test_the_weighted_mean_of_three_thetas_leaf_by_leaf(tmp_path):
    arch = NominalLOpt()
    thetas = [arch.init(jax.random.key(i)) for i in range(3)]
    paths = [_write(tmp_path, str(i), arch, t) for i, t in enumerate(thetas)]
    out = str(tmp_path / "mean.safetensors")
    result = soup.average(paths, out, weights=[1.0, 1.0, 2.0])
    mean, loaded_arch = load_theta(out)
    assert loaded_arch.config() == arch.config()
    for leaf, a, b, c in zip(jax.tree.leaves(mean), *(jax.tree.leaves(t) for t in thetas)):
        np.testing.assert_allclose(leaf, 0.25 * np.asarray(a) + 0.25 * np.asarray(b) + 0.5 * np.asarray(c),
                                   rtol=1e-6, atol=1e-7)
    assert result["weights"] == [0.25, 0.25, 0.5]
    # distances from the mean: the third file, weighted twice, is the nearest
    assert result["distances"][2] < min(result["distances"][:2])


def test_refuses_an_existing_out_mixed_architectures_and_bad_weights(tmp_path):
    arch = NominalLOpt()
    a = _write(tmp_path, "a", arch, arch.init(jax.random.key(0)))
    b = _write(tmp_path, "b", arch, arch.init(jax.random.key(1)))
    other = MLPLOpt()
    c = _write(tmp_path, "c", other, other.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="exists"):
        soup.average([a, b], a)
    with pytest.raises(ValueError, match="one architecture"):
        soup.average([a, c], str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="two or more"):
        soup.average([a], str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="non-negative"):
        soup.average([a, b], str(tmp_path / "x.safetensors"), weights=[1.0, -1.0])
    assert not os.path.exists(tmp_path / "x.safetensors")


def test_command_line_writes_the_mean_and_names_each_source(tmp_path, capsys):
    arch = NominalLOpt()
    theta = arch.init(jax.random.key(0))
    a = _write(tmp_path, "a", arch, theta)
    b = _write(tmp_path, "b", arch, jax.tree.map(lambda x: x + 1.0, theta))
    out = str(tmp_path / "m.safetensors")
    assert soup.main([a, b, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "a.safetensors: weight 0.500" in printed and "wrote" in printed
    mean, _ = load_theta(out)
    np.testing.assert_allclose(mean["log_lr"], np.asarray(theta["log_lr"]) + 0.5, rtol=1e-6)
    with pytest.raises(SystemExit):  # a second run refuses to overwrite
        soup.main([a, b, "--out", out])
