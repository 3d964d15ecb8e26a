import jax.random as jr
import numpy as np
import pytest

import dlnsim


def test_loss_is_half_trace_formula():
    k1, k2, k3 = jr.split(jr.PRNGKey(0), 3)
    teacher = dlnsim.random_teacher(k1, 3, 4)
    cov = dlnsim.correlated_input_cov(k2, 4)
    task = dlnsim.Task(teacher, cov)
    w = np.asarray(jr.normal(k3, (3, 4)))
    d = w - np.asarray(teacher)
    assert float(task.loss(w)) == pytest.approx(0.5 * np.trace(d @ np.asarray(cov) @ d.T), rel=1e-13)
    r = np.asarray(task.whitened_residual(w))
    assert float(task.loss(w)) == pytest.approx(0.5 * np.sum(r**2), rel=1e-12)


def test_default_input_cov_is_identity():
    task = dlnsim.Task(np.ones((2, 3)))
    np.testing.assert_array_equal(task.input_cov, np.eye(3))


def test_random_teacher_spectrum():
    t = dlnsim.random_teacher(jr.PRNGKey(0), 6, 5, rank=3)
    s = np.linalg.svd(np.asarray(t), compute_uv=False)
    np.testing.assert_allclose(s, [3, 2, 1, 0, 0], atol=1e-12)
    t = dlnsim.random_teacher(jr.PRNGKey(0), 4, 4, spectrum=[5.0, 0.5])
    np.testing.assert_allclose(np.linalg.svd(np.asarray(t), compute_uv=False)[:2], [5.0, 0.5], rtol=1e-12)


def test_correlated_input_cov_eigenvalues():
    cov = dlnsim.correlated_input_cov(jr.PRNGKey(0), 10)
    evals = np.sort(np.linalg.eigvalsh(np.asarray(cov)))[::-1]
    np.testing.assert_allclose(evals, np.exp(-5 * np.arange(10) / 10), rtol=1e-12)


def test_student_teacher_losses_match_sample_averages():
    data = dlnsim.student_teacher(jr.PRNGKey(0), width=8, samples=20, test_samples=50)
    w = np.asarray(jr.normal(jr.PRNGKey(1), (8, 8)))
    x, y = np.asarray(data.train_inputs), np.asarray(data.train_targets)
    assert float(data.train_loss(w)) == pytest.approx(0.5 * np.mean(np.sum((y - x @ w.T) ** 2, 1)), rel=1e-12)
    xt, yt = np.asarray(data.test_inputs), np.asarray(data.test_targets)
    assert float(data.test_loss(w)) == pytest.approx(
        0.5 * np.mean(np.sum((yt - xt @ w.T) ** 2, 1)), rel=1e-12
    )
    # the empirical least-squares map minimises the train loss at the irreducible constant
    assert float(data.train_loss(data.task.teacher)) == pytest.approx(float(data.irreducible_loss), rel=1e-10)
    assert float(data.irreducible_loss) > 0
    # noise: rms teacher strength over SNR
    s = np.linalg.svd(np.asarray(data.true_teacher), compute_uv=False)[:3]
    assert data.noise_std == pytest.approx(np.sqrt(np.mean(s**2)) / 10, rel=1e-12)


def test_mode_strengths_recover_targets_at_teacher():
    data = dlnsim.student_teacher(jr.PRNGKey(2), width=6, samples=12)
    task = data.task
    _, s, _ = task.mode_basis()
    np.testing.assert_allclose(task.mode_strengths(task.teacher), s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(task.mode_strengths(0 * task.teacher), 0.0, atol=1e-15)


def test_load_regression_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = x @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(30, 2))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    task, const = dlnsim.load_regression_data(str(tmp_path / "d.npz"))
    w = rng.normal(size=(2, 4))
    assert float(task.loss(w) + const) == pytest.approx(
        0.5 * np.mean(np.sum((y - x @ w.T) ** 2, 1)), rel=1e-12
    )
    np.savez(tmp_path / "bad.npz", x=np.full((3, 2), np.nan), y=np.ones((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        dlnsim.load_regression_data(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="arrays named"):
        np.savez(tmp_path / "wrong.npz", a=x)
        dlnsim.load_regression_data(str(tmp_path / "wrong.npz"))


@pytest.mark.parametrize(
    "teacher, cov, match",
    [
        (np.ones(3), None, "2-D"),
        (np.full((2, 2), np.inf), None, "non-finite"),
        (np.ones((2, 3)), np.eye(2), "must be \\(3, 3\\)"),
        (np.ones((2, 2)), np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.ones((2, 2)), np.array([[1.0, 0.0], [0.0, -1.0]]), "positive semi-definite"),
    ],
)
def test_task_validation(teacher, cov, match):
    with pytest.raises(ValueError, match=match):
        dlnsim.Task(teacher, cov)


def test_student_teacher_validation():
    with pytest.raises(ValueError, match="snr"):
        dlnsim.student_teacher(jr.PRNGKey(0), snr=0)
    with pytest.raises(ValueError, match="rank"):
        dlnsim.student_teacher(jr.PRNGKey(0), width=4, rank=5)
